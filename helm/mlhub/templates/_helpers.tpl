{{/*
Names, labels and shared snippets. Every object name comes from mlhub.fullname, so two releases in one
namespace never collide; fullname is cut to 40 characters so that "<fullname>-proxy-public" stays a valid
DNS label (63).
*/}}

{{- define "mlhub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlhub.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Object names, one per role. */}}
{{- define "mlhub.hub.fullname" -}}{{ include "mlhub.fullname" . }}-hub{{- end -}}
{{- define "mlhub.hub.valuesSecret" -}}{{ include "mlhub.fullname" . }}-hub-values{{- end -}}
{{- define "mlhub.hub.userConfig" -}}{{ include "mlhub.fullname" . }}-hub-user-config{{- end -}}
{{- define "mlhub.hub.allowList" -}}
{{- .Values.hub.allowList.existingConfigMap | default (printf "%s-hub-allow-list" (include "mlhub.fullname" .)) -}}
{{- end -}}
{{- define "mlhub.hub.nodeReader" -}}{{ .Release.Namespace }}-{{ include "mlhub.hub.fullname" . }}-nodes{{- end -}}
{{- define "mlhub.hub.userNamespaces" -}}{{ .Release.Namespace }}-{{ include "mlhub.hub.fullname" . }}-user-namespaces{{- end -}}
{{- define "mlhub.hub.pvc" -}}{{ include "mlhub.fullname" . }}-hub-db{{- end -}}
{{- define "mlhub.proxy.fullname" -}}{{ include "mlhub.fullname" . }}-proxy{{- end -}}
{{- define "mlhub.proxy.api" -}}{{ include "mlhub.fullname" . }}-proxy-api{{- end -}}
{{- define "mlhub.proxy.public" -}}{{ include "mlhub.fullname" . }}-proxy-public{{- end -}}
{{- define "mlhub.secret" -}}{{ .Values.existingSecret | default (printf "%s-secret" (include "mlhub.fullname" .)) }}{{- end -}}
{{- define "mlhub.tlsSecret" -}}
{{- .Values.hub.ssl.existingSecret | default (printf "%s-tls" (include "mlhub.fullname" .)) -}}
{{- end -}}
{{- define "mlhub.singleuser.fullname" -}}{{ include "mlhub.fullname" . }}-singleuser{{- end -}}

{{/*
HUB_NAME: hub.name, else the release name, which must then be a valid hub name (the rule of
mlhubspawner/naming.py: 1-20 lower-case letters, digits and single hyphens, starting with a letter, not ending
with a hyphen).
*/}}
{{- define "mlhub.hubName" -}}
{{- $name := .Values.hub.name | default .Release.Name -}}
{{- if not (and (le (len $name) 20) (regexMatch "^[a-z](-?[a-z0-9])*$" $name)) -}}
{{- fail (printf "hub.name: the release name %q is not a valid hub name (1-20 lower-case letters, digits and single hyphens, starting with a letter); set hub.name" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "mlhub.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mlhub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlhub
{{- end -}}

{{- define "mlhub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlhub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: include "mlhub.componentLabels" (list . "hub") */}}
{{- define "mlhub.componentLabels" -}}
{{ include "mlhub.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "mlhub.componentSelector" -}}
{{ include "mlhub.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The workspaces of this hub (labels set by the spawner, mlhubspawner/naming.py). */}}
{{- define "mlhub.workspaceSelector" -}}
mlhub.component: workspace
mlhub.origin: {{ include "mlhub.hubName" . }}
{{- end -}}

{{- define "mlhub.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "mlhub.proxy.port" -}}
{{- if .Values.proxy.service.port -}}
{{ .Values.proxy.service.port }}
{{- else if .Values.hub.ssl.enabled -}}
443
{{- else -}}
80
{{- end -}}
{{- end -}}

{{- define "mlhub.sslOn" -}}
{{- if .Values.hub.ssl.enabled -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* env entries of a NAME: value map */}}
{{- define "mlhub.extraEnv" -}}
{{- range $name, $value := . }}
{{- /* whole numbers from a values file are float64: print 1209600, not 1.2096e+06 */}}
{{- if and (kindIs "float64" $value) (eq (floor $value) $value) }}
{{- $value = int64 $value }}
{{- end }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
an env entry from the chart's Secret (or existingSecret): include "mlhub.secretEnv" (list . "NAME" "key"), or
(list . "NAME" "key" true) for a key the Secret may lack (the variable is then unset)
*/}}
{{- define "mlhub.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "mlhub.secret" (index . 0) }}
      key: {{ index . 2 }}
      {{- if gt (len .) 3 }}
      optional: {{ index . 3 }}
      {{- end }}
{{- end -}}

{{/*
The data of the chart's Secret (JSON, plain text values), computed once per rendering and kept on the root
context, so the Secret and the checksum/secret annotations of both Deployments see the same random values.
Each value is, in order: the chart value (if you set one), the value in the Secret this release already has
(read with `lookup` during install/upgrade), a new random one. `helm template` (Argo CD, Flux) has no cluster:
every rendering draws new random values; existingSecret avoids that.
*/}}
{{- define "mlhub.secretData" -}}
{{- if not (hasKey . "_mlhubSecretData") -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "mlhub.secret" .)).data | default dict -}}
{{- $old := dict -}}
{{- range $key, $value := $existing -}}
{{- $_ := set $old $key (b64dec $value) -}}
{{- end -}}
{{- $data := dict
    "proxy-token" (.Values.proxy.secretToken | default (get $old "proxy-token") | default (randAlphaNum 64))
    "cookie-secret" (.Values.hub.cookieSecret | default (get $old "cookie-secret") | default (sha256sum (randAlphaNum 64)))
    "ssh-front-token" (get $old "ssh-front-token" | default (randAlphaNum 64))
    "ssh-host-ecdsa-key" (get $old "ssh-host-ecdsa-key" | default (genPrivateKey "ecdsa"))
-}}
{{- with .Values.hub.adminPassword }}{{ $_ := set $data "admin-password" . }}{{ end -}}
{{- with .Values.hub.db.password }}{{ $_ := set $data "db-password" . }}{{ end -}}
{{- $_ := set . "_mlhubSecretData" $data -}}
{{- $_ := set . "_mlhubSecretFresh" (not $existing) -}}
{{- end -}}
{{- get . "_mlhubSecretData" | toJson -}}
{{- end -}}

{{/*
checksum/secret of both Deployments: a changed Secret rolls the pods. The hash of the rendered data, or of the
existingSecret's name (its contents are not the chart's to read: rename it to roll the pods).
*/}}
{{- define "mlhub.secretChecksum" -}}
{{- if .Values.existingSecret -}}
{{- printf "existingSecret:%s" .Values.existingSecret | sha256sum -}}
{{- else -}}
{{- include "mlhub.secretData" . | sha256sum -}}
{{- end -}}
{{- end -}}

{{/*
The values the hub reads (mlhubspawner/chart_values.py): .Values without userConfig (its own Secret) and
without the secrets the hub gets elsewhere (TLS material, tokens), plus the names this release gave its objects.
*/}}
{{- define "mlhub.hubValues" -}}
{{- $values := deepCopy .Values -}}
{{- $_ := unset $values "userConfig" -}}
{{- $_ := unset $values.hub.ssl "cert" -}}
{{- $_ := unset $values.hub.ssl "key" -}}
{{- $_ := unset $values.hub "cookieSecret" -}}
{{- $_ := unset $values.hub "adminPassword" -}}
{{- $_ := unset $values.proxy "secretToken" -}}
{{- $_ := unset $values.hub.db "password" -}}
{{- /* the hub reads the allow list from its mounted file at each login: new names must not roll it */ -}}
{{- $_ := unset $values.hub "allowList" -}}
{{- $chart := dict
    "name" .Chart.Name
    "version" .Chart.Version
    "release" .Release.Name
    "namespace" .Release.Namespace
    "hubName" (include "mlhub.hubName" .)
    "names" (dict
      "fullname" (include "mlhub.fullname" .)
      "hub" (include "mlhub.hub.fullname" .)
      "proxyApi" (include "mlhub.proxy.api" .)
      "proxyPublic" (include "mlhub.proxy.public" .)
      "singleuser" (include "mlhub.singleuser.fullname" .))
    "ports" (dict "hub" 8081 "proxyApi" 8001 "proxyPublic" (include "mlhub.proxy.port" . | int))
    "selectors" (dict
      "hub" (include "mlhub.componentSelector" (list . "hub") | fromYaml)
      "proxy" (include "mlhub.componentSelector" (list . "proxy") | fromYaml))
    "blockedCIDRs" (include "mlhub.blockedCIDRList" . | fromJsonArray)
    "dnsPeers" (include "mlhub.dnsPeerList" . | fromJsonArray)
    "dnsPorts" .Values.networkPolicy.dns.ports
-}}
{{- $_ := set $values "_chart" $chart -}}
{{- toYaml $values -}}
{{- end -}}

{{/* a list of arguments as one shell-quoted string (ADDITIONAL_ARGS is split with shlex) */}}
{{- define "mlhub.shellJoin" -}}
{{- $quoted := list -}}
{{- range . -}}
{{- $quoted = append $quoted (printf "'%s'" (replace "'" "'\\''" (toString .))) -}}
{{- end -}}
{{- join " " $quoted -}}
{{- end -}}

{{/* NetworkPolicy peers */}}
{{- define "mlhub.peer.hub" -}}
podSelector:
  matchLabels:
    {{- include "mlhub.componentSelector" (list . "hub") | nindent 4 }}
{{- end -}}

{{- define "mlhub.peer.proxy" -}}
podSelector:
  matchLabels:
    {{- include "mlhub.componentSelector" (list . "proxy") | nindent 4 }}
{{- end -}}

{{- define "mlhub.peer.workspaces" -}}
{{- if .Values.singleuser.userNamespaces.enabled }}
# in the users' namespaces, which the hub labels with its origin
namespaceSelector:
  matchLabels:
    mlhub.origin: {{ include "mlhub.hubName" . }}
{{ end -}}
podSelector:
  matchLabels:
    {{- include "mlhub.workspaceSelector" . | nindent 4 }}
{{- end -}}

{{/*
DNS only to the cluster's resolver (networkPolicy.dns): its pods (kube-dns/CoreDNS in kube-system by default) and
optional CIDRs (NodeLocal DNSCache), on its ports over UDP and TCP. Never port 53 to any address: a DNS server on
the LAN or the nodes would be reachable through it. The spawner's per-user policies get the same peers.
*/}}
{{- define "mlhub.dnsPeerList" -}}
{{- $dns := .Values.networkPolicy.dns -}}
{{- $peers := list -}}
{{- $selected := dict -}}
{{- with $dns.namespaceSelector }}{{ $_ := set $selected "namespaceSelector" . }}{{ end -}}
{{- with $dns.podSelector }}{{ $_ := set $selected "podSelector" . }}{{ end -}}
{{- if $selected }}{{ $peers = append $peers $selected }}{{ end -}}
{{- range $dns.cidrs }}{{ $peers = append $peers (dict "ipBlock" (dict "cidr" .)) }}{{ end -}}
{{- toJson $peers -}}
{{- end -}}

{{- define "mlhub.egress.dns" -}}
- to:
    {{- include "mlhub.dnsPeerList" . | fromJsonArray | toYaml | nindent 4 }}
  ports:
    {{- range .Values.networkPolicy.dns.ports }}
    - port: {{ . }}
      protocol: UDP
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end -}}

{{/*
The hub's internet: every IPv4 and IPv6 address but link-local (the metadata services of every cloud), Alibaba's
100.100.100.200, Azure's WireServer 168.63.129.16 and AWS's IPv6 IMDS and Pod Identity addresses. Its metadata
access is networkPolicy.hub.cloudMetadata (mlhub.egress.cloudMetadata).
*/}}
{{- define "mlhub.hubInternetPeers" -}}
- ipBlock:
    cidr: 0.0.0.0/0
    except: [169.254.0.0/16, 100.100.100.200/32, 168.63.129.16/32]
- ipBlock:
    cidr: ::/0
    except: [fe80::/10, fd00:ec2::254/128, fd00:ec2::23/128]
{{- end -}}

{{/*
Cloud metadata, for the hub only when networkPolicy.hub.cloudMetadata: IMDS (169.254.169.254, AWS IPv6
fd00:ec2::254), GKE's metadata server for Workload Identity (169.254.169.252), EKS Pod Identity (169.254.170.23,
fd00:ec2::23).
*/}}
{{- define "mlhub.egress.cloudMetadata" -}}
- to:
    {{- range list "169.254.169.254/32" "169.254.169.252/32" "169.254.170.23/32" "fd00:ec2::254/128" "fd00:ec2::23/128" }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
{{- end -}}

{{/* The hub's egress to the API server's addresses (networkPolicy.apiServer), if any are named. */}}
{{- define "mlhub.egress.apiServer" -}}
{{- with .Values.networkPolicy.apiServer -}}
{{- if .cidrs }}
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
proxy.service.sshPort must not be the main port: two Service ports of one number are refused by the API server.
The schema refuses it for the default ports (80, 443); this for an explicit proxy.service.port.
*/}}
{{- define "mlhub.checkSshPort" -}}
{{- $ssh := .Values.proxy.service.sshPort -}}
{{- if and $ssh (eq (int $ssh) (include "mlhub.proxy.port" . | int)) -}}
{{- fail (printf "proxy.service.sshPort: %v is the Service's main port already (proxy.service.port); leave sshPort empty or pick another" $ssh) -}}
{{- end -}}
{{- end -}}

{{/*
The ranges workspaces may not reach (JSON list, IPv4 first, then IPv6); the spawner's per-user policies get the
same. Always: link-local (169.254/16, fe80::/10: the metadata services of AWS, GCP, Azure, Oracle, OpenStack, ECS
tasks, Tencent), Alibaba's 100.100.100.200, Azure's WireServer 168.63.129.16, AWS's IPv6 metadata fd00:ec2::254 and
EKS Pod Identity fd00:ec2::23 (inside fc00::/7, which privateIPs opens).
Unless privateIPs: 10/8, 172.16/12, 192.168/16, 100.64/10 (shared/CGNAT) and fc00::/7 (the nodes, the LAN).
*/}}
{{- define "mlhub.blockedCIDRList" -}}
{{- $np := .Values.singleuser.networkPolicy -}}
{{- $blocked := list "169.254.0.0/16" "100.100.100.200/32" "168.63.129.16/32" "fe80::/10" "fd00:ec2::254/128" "fd00:ec2::23/128" -}}
{{- if not $np.privateIPs -}}
{{- $blocked = concat $blocked (list "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" "100.64.0.0/10" "fc00::/7") -}}
{{- end -}}
{{- $all := concat $blocked $np.blockedCIDRs | uniq -}}
{{- $v4 := list -}}
{{- $v6 := list -}}
{{- range $all }}{{ if contains ":" . }}{{ $v6 = append $v6 . }}{{ else }}{{ $v4 = append $v4 . }}{{ end }}{{ end -}}
{{- concat $v4 $v6 | toJson -}}
{{- end -}}

{{/* The workspaces' internet: every IPv4 and IPv6 address but the blocked ranges (NetworkPolicyPeer list). */}}
{{- define "mlhub.internetPeers" -}}
{{- $v4 := list -}}
{{- $v6 := list -}}
{{- range (include "mlhub.blockedCIDRList" . | fromJsonArray) }}{{ if contains ":" . }}{{ $v6 = append $v6 . }}{{ else }}{{ $v4 = append $v4 . }}{{ end }}{{ end -}}
{{- $peers := list (dict "ipBlock" (dict "cidr" "0.0.0.0/0" "except" $v4)) -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" "::/0" "except" $v6)) -}}
{{- toYaml $peers -}}
{{- end -}}

{{- define "mlhub.imagePuller.fullname" -}}{{ include "mlhub.fullname" . }}-image-puller{{- end -}}

{{/*
The images the pre-puller pulls (JSON list, no duplicates): the default workspace image, the form's images
(singleuser.images), then prePuller.extraImages.
*/}}
{{- define "mlhub.prePuller.images" -}}
{{- $default := .Values.singleuser.image.name -}}
{{- with .Values.singleuser.image.tag }}{{ $default = printf "%s:%s" $default . }}{{ end -}}
{{- concat (list $default) .Values.singleuser.images .Values.prePuller.extraImages | uniq | toJson -}}
{{- end -}}

{{/* resources and security context of every container of the pre-puller (Pod Security restricted) */}}
{{- define "mlhub.prePuller.container" -}}
resources:
  {{- toYaml .Values.prePuller.resources | nindent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  runAsUser: 65534
  runAsGroup: 65534
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}
