"""The hub image's front door: which processes run, where they listen, and the configs they get.

Pure: the rendered supervisord.conf, nginx.conf and sshd_config are parsed back (supervisord's way for
its config; a small nginx tokenizer; sshd's keyword/value lines) and checked for what an operator
would see: what answers on the public port, what stays on loopback, and what a client may do.
"""

import configparser
import re
import shlex
import socket

import pytest

from mlhubspawner.front import container
from mlhubspawner.front import layout as L
from mlhubspawner.settings import load_settings

FRONT = ("172.18.0.5",)  # the hub container's address on its front network (where -p publishes)
CERT, KEY = "/data/ssl/cert.crt", "/data/ssl/cert.key"
HOST_KEYS = ("/data/ssh/ssh_host_ed25519_key", "/data/ssh/ssh_host_ecdsa_key", "/data/ssh/ssh_host_rsa_key")
KEYS_COMMAND = "/usr/local/libexec/mlhub/front-authorized-keys"
HUB_COMMAND = ["/opt/mlhub/venv/bin/python", "-m", "jupyterhub", "-f", "/etc/mlhub/jupyterhub_config.py"]


def make_layout(env=None, listen=FRONT, unprivileged=False):
    settings = load_settings(env or {})
    cert, key = (CERT, KEY) if settings.ssl_enabled else ("", "")
    return L.layout_from_settings(
        settings, listen=listen, cert=cert, key=key, host_keys=HOST_KEYS, unprivileged=unprivileged
    )


TLS_ON = {"SSL_ENABLED": "true"}
TLS_OFF = {"SSL_ENABLED": "false"}
NO_SSH = {"START_SSH": "false"}

# the layouts an operator can pick with SSL_ENABLED and START_SSH (nginx and the hub on)
FRONT_LAYOUTS = {
    "tls+ssh": TLS_ON,
    "tls": {**TLS_ON, **NO_SSH},
    "plain+ssh": TLS_OFF,
    "plain": {**TLS_OFF, **NO_SSH},
}


# --- supervisord ----------------------------------------------------------------------------


def supervisor_programs(text):
    """``{name: (argv, user)}`` as supervisord reads them (user None: no ``user=``, the current user).

    supervisord's parser strips inline ``;``/``#`` comments, expands ``%(...)s`` (``%%`` is a literal
    ``%``) and splits ``command`` with shlex.
    """
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    parser.read_string(text)
    programs = {}
    for section in parser.sections():
        if not section.startswith("program:"):
            continue
        name = section.removeprefix("program:")
        expansions = {
            "program_name": name,
            "process_num": 0,
            "group_name": name,
            "numprocs": 1,
            "here": "/run/mlhub",
            "host_node_name": "hub",
            "ENV_HOME": "/root",
        }
        command = parser.get(section, "command") % expansions
        programs[name] = (shlex.split(command), parser.get(section, "user", fallback=None))
    return programs


def rendered_programs(env=None, listen=FRONT, hub_command=HUB_COMMAND, unprivileged=False):
    return supervisor_programs(L.render_supervisord(make_layout(env, listen, unprivileged), hub_command))


def test_default_image_runs_hub_sshd_nginx_and_sslh_in_order():
    programs = rendered_programs()
    assert list(programs) == ["jupyterhub", "sshd", "nginx", "sslh"]
    assert programs["jupyterhub"] == (HUB_COMMAND, "root")
    assert programs["sshd"] == (["/usr/sbin/sshd", "-D", "-e", "-f", "/run/mlhub/sshd_config"], "root")
    # "daemon off;" keeps its semicolon: nginx stays in the foreground under supervisord
    assert programs["nginx"] == (["nginx", "-c", "/run/mlhub/nginx.conf", "-g", "daemon off;"], "root")
    assert programs["sslh"][1] == "sslh"


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"START_SSH": "false"}, ["jupyterhub", "nginx"]),
        ({"START_NGINX": "false"}, ["jupyterhub", "sshd"]),
        ({"START_JHUB": "false"}, ["sshd", "nginx", "sslh"]),
        ({"START_CHP": "true"}, ["jupyterhub", "configurable-http-proxy", "sshd", "nginx", "sslh"]),
        (
            {"START_NGINX": "no", "START_SSH": "no", "START_JHUB": "no", "START_CHP": "yes"},
            ["configurable-http-proxy"],
        ),
        ({"START_NGINX": "0", "START_SSH": "0"}, ["jupyterhub"]),
    ],
)
def test_start_variables_choose_the_programs(env, expected):
    assert list(rendered_programs(env)) == expected


def test_every_program_restarts_and_logs_to_the_container_log():
    text = L.render_supervisord(make_layout({"START_CHP": "true"}), HUB_COMMAND)
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    parser.read_string(text)
    sections = [s for s in parser.sections() if s.startswith("program:")]
    assert len(sections) == 5
    for section in sections:
        assert parser.get(section, "autorestart") == "true", section
        assert parser.get(section, "stdout_logfile") == "/dev/fd/1", section
        assert parser.get(section, "redirect_stderr") == "true", section
    assert parser.get("supervisord", "nodaemon") == "true"


def test_chp_runs_on_loopback_without_x_forward_and_gets_the_additional_args():
    args = '--log-level=debug --custom-header "X-Team: ml hub" --error-path=/srv/50%25 "%(here)s"'
    programs = rendered_programs({"START_CHP": "true", "ADDITIONAL_ARGS": args})
    argv, user = programs["configurable-http-proxy"]
    assert user == "nobody"
    assert argv == [
        "configurable-http-proxy",
        "--ip=127.0.0.1",
        "--port=8000",
        "--api-ip=127.0.0.1",
        "--api-port=8001",
        # the hub answers while a restarted proxy has no routes yet
        "--default-target=http://127.0.0.1:8081",
        "--error-target=http://127.0.0.1:8081/hub/error",
        "--no-x-forward",
        # each argument arrives whole: spaces kept, % and %(...)s literal
        "--log-level=debug",
        "--custom-header",
        "X-Team: ml hub",
        "--error-path=/srv/50%25",
        "%(here)s",
    ]


def test_hub_command_with_spaces_and_percent_survives_supervisord():
    hub_command = ["/opt/ml hub/bin/python", "-m", "jupyterhub", "-f", "/etc/mlhub/100% config.py"]
    assert rendered_programs(hub_command=hub_command)["jupyterhub"][0] == hub_command


@pytest.mark.parametrize("arg", ["X-Note: a ;b", "X-Note: a #b"])
def test_additional_arg_with_an_inline_comment_marker_survives_supervisord(arg):
    programs = rendered_programs(
        {"START_CHP": "true", "ADDITIONAL_ARGS": shlex.join(["--custom-header", arg])}
    )
    assert programs["configurable-http-proxy"][0][-2:] == ["--custom-header", arg]


def test_nothing_to_run_is_refused_naming_the_variables():
    env = {"START_NGINX": "false", "START_SSH": "false", "START_JHUB": "false", "START_CHP": "false"}
    with pytest.raises(ValueError) as error:
        make_layout(env)
    for variable in ("START_NGINX", "START_SSH", "START_JHUB", "START_CHP"):
        assert variable in str(error.value)


def test_tls_without_a_certificate_is_refused():
    with pytest.raises(ValueError, match="SSL_ENABLED"):
        L.layout_from_settings(load_settings(TLS_ON), listen=FRONT, host_keys=HOST_KEYS)
    with pytest.raises(ValueError, match="SSL_ENABLED"):
        L.layout_from_settings(load_settings(TLS_ON), listen=FRONT, cert=CERT, host_keys=HOST_KEYS)


# --- not root (the chart's pods) -------------------------------------------------------------

PROXY_POD = {"START_JHUB": "false", "START_CHP": "true", "START_NGINX": "true", "START_SSH": "true"}
HUB_POD = {"START_JHUB": "true", "START_CHP": "false", "START_NGINX": "false", "START_SSH": "false"}


@pytest.mark.parametrize(
    "env", [PROXY_POD, {**PROXY_POD, **TLS_ON}, HUB_POD, {}], ids=["proxy", "tls", "hub", "all"]
)
def test_not_root_every_program_runs_as_the_current_user(env):
    """supervisord refuses ``user=`` when not root: neither it nor any program switches account."""
    layout = make_layout(env, unprivileged=True)
    text = L.render_supervisord(layout, HUB_COMMAND)
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    parser.read_string(text)
    assert not parser.has_option("supervisord", "user")
    programs = supervisor_programs(text)
    # the same programs as when root, in the same order
    assert list(programs) == list(supervisor_programs(L.render_supervisord(make_layout(env), HUB_COMMAND)))
    assert {user for _, user in programs.values()} == {None}
    for section in (s for s in parser.sections() if s.startswith("program:")):
        assert parser.get(section, "directory") == "/data", section  # its own data directory


def test_as_root_each_program_keeps_its_account():
    programs = rendered_programs({**TLS_ON, "START_CHP": "true"})
    assert {name: user for name, (_, user) in programs.items()} == {
        "jupyterhub": "root",
        "configurable-http-proxy": "nobody",
        "sshd": "root",
        "nginx": "root",
        "sslh": "sslh",
    }
    text = L.render_supervisord(make_layout(TLS_ON), HUB_COMMAND)
    assert "\nuser=root\n" in text.split("[unix_http_server]")[0]


def test_not_root_nginx_logs_to_stderr_from_the_start_and_keeps_its_files_in_the_run_dir():
    argv, _ = rendered_programs(PROXY_POD, unprivileged=True)["nginx"]
    # nginx opens its built-in /var/log/nginx/error.log before reading the config, unless told -e
    assert argv == ["nginx", "-e", "stderr", "-c", "/run/mlhub/nginx.conf", "-g", "daemon off;"]
    for env in (PROXY_POD, {**PROXY_POD, **TLS_ON}, {**PROXY_POD, **NO_SSH}):
        conf = parse_nginx(L.render_nginx(make_layout(env, unprivileged=True)))
        assert find(conf, "user") == []  # nginx warns, and cannot switch, when not root
        assert one(conf, "pid").args == ["/run/mlhub/nginx.pid"]
        http = one(conf, "http")
        temp = {d.name: d.args for d in http.block if d.name.endswith("_temp_path")}
        assert set(temp) == {f"{k}_temp_path" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for args in temp.values():
            assert len(args) == 1 and args[0].startswith("/run/mlhub/"), args
        assert len({args[0] for args in temp.values()}) == 5
    # as root: the workers as www-data, nginx's own temp paths
    conf = parse_nginx(L.render_nginx(make_layout(PROXY_POD)))
    assert one(conf, "user").args == ["www-data"]
    assert not [d for d in walk(conf) if d.name.endswith("_temp_path")]
    assert rendered_programs(PROXY_POD)["nginx"][0][:2] == ["nginx", "-c"]


def test_not_root_the_certificate_watcher_reloads_nginx_with_stderr_logging():
    layout = L.Layout(
        ssl=True, nginx=True, ssh=True, jhub=False, chp=True, cert=CERT, key=KEY, cert_source="/resources/ssl",
        unprivileged=True,
    )  # fmt: skip
    assert "--nginx-stderr" in L.cert_reload_command(layout)
    assert "--nginx-stderr" not in L.cert_reload_command(
        L.Layout(**{**layout.__dict__, "unprivileged": False})
    )


def test_not_root_sshd_looks_keys_up_as_the_tunnel_account_it_runs_as():
    conf = sshd_options(L.render_sshd(make_layout(PROXY_POD, unprivileged=True), KEYS_COMMAND))
    assert conf["allowusers"] == ["tunnel"]
    assert conf["authorizedkeyscommanduser"] == ["tunnel"]
    assert conf["authorizedkeyscommand"] == [f"{KEYS_COMMAND} %u %t %k"]
    assert conf["permitrootlogin"] == ["no"]
    assert conf["forcecommand"] == ["/usr/sbin/nologin"]
    root = sshd_options(L.render_sshd(make_layout(PROXY_POD), KEYS_COMMAND))
    assert root["authorizedkeyscommanduser"] == ["mlhub-keys"]
    assert {k: v for k, v in root.items() if k != "authorizedkeyscommanduser"} == {
        k: v for k, v in conf.items() if k != "authorizedkeyscommanduser"
    }


# --- sslh -----------------------------------------------------------------------------------


def sslh_argv(env, listen=FRONT):
    return rendered_programs(env, listen)["sslh"][0]


def options(argv, name):
    return [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]


def test_sslh_without_tls_listens_publicly_and_hands_http_to_nginx():
    argv = sslh_argv(TLS_OFF)
    # the forking sslh: sslh-select 1.20 dropped about 1 in 600 plain HTTP connections here
    assert argv[0] == "sslh" and "--foreground" in argv
    assert options(argv, "listen") == ["172.18.0.5:8080", "127.0.0.1:8080"]
    assert options(argv, "ssh") == ["127.0.0.1:2222"]
    assert options(argv, "http") == ["127.0.0.1:8090"]
    assert options(argv, "anyprot") == ["127.0.0.1:8090"]


def test_sslh_with_tls_sits_behind_the_splitter_and_hands_http_to_the_redirect():
    argv = sslh_argv(TLS_ON)
    assert options(argv, "listen") == ["127.0.0.1:8444"]
    assert options(argv, "ssh") == ["127.0.0.1:2222"]
    assert options(argv, "http") == ["127.0.0.1:8091"]
    assert options(argv, "anyprot") == ["127.0.0.1:8091"]


def test_sslh_can_bind_all_its_listen_addresses_when_there_is_no_front_address():
    """No front address known (START_JHUB=false, or no front network): sslh must still start."""
    addresses = [a.rsplit(":", 1)[0] for a in options(sslh_argv(TLS_OFF, listen=("0.0.0.0",)), "listen")]
    sockets = []
    port = 0
    try:
        for address in addresses:  # sslh: socket, SO_REUSEADDR, bind, listen, die on error
            s = socket.socket()
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen()
            port = s.getsockname()[1]
    finally:
        for s in sockets:
            s.close()


# --- nginx.conf -----------------------------------------------------------------------------

_TOKEN = re.compile(r'#[^\n]*|"[^"]*"|[{};]|[^\s{};"#]+')


class Directive:
    def __init__(self, name, args, block=None):
        self.name, self.args, self.block = name, args, block

    def __repr__(self):
        return f"{self.name} {' '.join(self.args)}{' {...}' if self.block is not None else ';'}"


def parse_nginx(text):
    """nginx.conf as a tree of directives; fails on unbalanced braces or a directive without ``;``."""
    root = []
    stack, words = [root], []
    for token in _TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token == ";":
            assert words, "empty directive"
            stack[-1].append(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            directive = Directive(words[0], words[1:], [])
            stack[-1].append(directive)
            stack.append(directive.block)
            words = []
        elif token == "}":
            assert not words, f"directive without ';': {words}"
            stack.pop()
            assert stack, "unbalanced '}'"
        else:
            words.append(token[1:-1] if token.startswith('"') else token)
    assert not words and len(stack) == 1, "unterminated block or directive"
    return root


def find(block, name):
    return [d for d in block if d.name == name]


def one(block, name):
    found = find(block, name)
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def walk(block):
    for d in block:
        yield d
        if d.block is not None:
            yield from walk(d.block)


def nginx(env, listen=FRONT):
    return parse_nginx(L.render_nginx(make_layout(env, listen)))


def listens(server):
    return [d.args for d in find(server.block, "listen")]


def test_tls_on_one_public_port_split_by_ssl_preread():
    conf = nginx(TLS_ON)
    stream = one(conf, "stream")
    public, plain = find(stream.block, "server")
    assert listens(public) == [["172.18.0.5:8080"], ["127.0.0.1:8080"]]
    assert one(public.block, "ssl_preread").args == ["on"]
    assert one(public.block, "proxy_protocol").args == ["on"]  # the HTTPS server learns the client address
    routes = one(stream.block, "map")
    assert routes.args == ["$ssl_preread_protocol", "$mlhub_upstream"]
    assert {d.name: d.args for d in routes.block} == {"": ["127.0.0.1:8445"], "default": ["127.0.0.1:8443"]}
    assert one(public.block, "proxy_pass").args == ["$mlhub_upstream"]
    # not TLS: the PROXY header is dropped, then sslh tells SSH from plain HTTP
    assert listens(plain) == [["127.0.0.1:8445", "proxy_protocol"]]
    assert one(plain.block, "proxy_pass").args == ["127.0.0.1:8444"]


def test_tls_on_without_ssh_sends_plain_connections_straight_to_the_redirect():
    stream = one(nginx({**TLS_ON, **NO_SSH}), "stream")
    plain = find(stream.block, "server")[1]
    assert one(plain.block, "proxy_pass").args == ["127.0.0.1:8091"]


def test_tls_on_https_server_on_loopback_with_proxy_protocol_and_hsts():
    http = one(nginx(TLS_ON), "http")
    https, redirect = find(http.block, "server")
    assert listens(https) == [["127.0.0.1:8443", "ssl", "proxy_protocol"]]
    assert one(https.block, "real_ip_header").args == ["proxy_protocol"]
    assert one(https.block, "set_real_ip_from").args == ["127.0.0.1"]
    assert one(https.block, "ssl_certificate").args == [CERT]
    assert one(https.block, "ssl_certificate_key").args == [KEY]
    assert one(https.block, "ssl_protocols").args == ["TLSv1.2", "TLSv1.3"]
    headers = {d.args[0]: d.args[1:] for d in find(https.block, "add_header")}
    assert headers["Strict-Transport-Security"] == ["max-age=31536000", "always"]
    # plain HTTP on the TLS port: redirected to https on the same host and port
    assert listens(redirect) == [["127.0.0.1:8091"]]
    assert one(redirect.block, "return").args == ["301", "https://$redirect_host$request_uri"]
    assert find(redirect.block, "location") == []


def test_tls_off_with_ssh_nginx_serves_http_on_loopback_only_behind_sslh():
    conf = nginx(TLS_OFF)
    assert find(conf, "stream") == []
    http = one(conf, "http")
    (server,) = find(http.block, "server")
    assert listens(server) == [["127.0.0.1:8090"]]
    names = {d.name for d in walk(conf)}
    assert not names & {"ssl_certificate", "ssl_certificate_key", "return"}
    assert "Strict-Transport-Security" not in L.render_nginx(make_layout(TLS_OFF))
    # sslh, not nginx, owns the public port
    assert options(sslh_argv(TLS_OFF), "listen") == ["172.18.0.5:8080", "127.0.0.1:8080"]


def test_tls_off_without_ssh_nginx_itself_owns_the_public_port():
    conf = nginx({**TLS_OFF, **NO_SSH})
    assert find(conf, "stream") == []
    (server,) = find(one(conf, "http").block, "server")
    assert listens(server) == [["172.18.0.5:8080"], ["127.0.0.1:8080"]]
    assert "sslh" not in rendered_programs({**TLS_OFF, **NO_SSH})


@pytest.mark.parametrize("env", FRONT_LAYOUTS.values(), ids=FRONT_LAYOUTS.keys())
def test_listens_only_on_front_addresses_and_loopback(env):
    listen = ("172.18.0.5", "10.20.0.3", "127.0.0.1")
    conf = nginx(env, listen=listen)
    addresses = [d.args[0] for d in walk(conf) if d.name == "listen"]
    assert addresses
    for address in addresses:
        assert address.rsplit(":", 1)[0] in listen, address
    assert "0.0.0.0" not in L.render_nginx(make_layout(env, listen))
    for server in (d for d in walk(conf) if d.name == "server" and d.block is not None):
        server_listens = [a[0] for a in listens(server)]
        assert len(server_listens) == len(set(server_listens)), f"duplicate listen: {server_listens}"
    public = [a for a in addresses if a.endswith(":8080")]
    if env["SSL_ENABLED"] == "false" and "START_SSH" not in env:
        assert public == []  # sslh holds the public port
    else:
        assert public == ["172.18.0.5:8080", "10.20.0.3:8080", "127.0.0.1:8080"]


@pytest.mark.parametrize("env", FRONT_LAYOUTS.values(), ids=FRONT_LAYOUTS.keys())
def test_every_http_request_goes_through_chp_with_forwarded_headers(env):
    text = L.render_nginx(make_layout(env))
    assert "access-control-allow" not in text.lower()  # no CORS opened by the front
    http = one(parse_nginx(text), "http")
    upstream = one(http.block, "upstream")
    assert upstream.args == ["chp"]
    assert [d.args for d in find(upstream.block, "server")] == [["127.0.0.1:8000"]]
    locations = [d for d in walk(http.block) if d.name == "location"]
    assert locations
    for location in locations:
        assert one(location.block, "proxy_pass").args == ["http://chp"]
        headers = {d.args[0]: d.args[1] for d in find(location.block, "proxy_set_header")}
        assert headers["Host"] == "$http_host"
        assert headers["X-Forwarded-Host"] == "$http_host"
        assert headers["X-Forwarded-Proto"] == "$scheme"
        assert headers["X-Forwarded-For"] == "$remote_addr"
        # websockets (kernels, terminals) pass through
        assert headers["Upgrade"] == "$http_upgrade"
        assert headers["Connection"] == "$connection_upgrade"
    # nothing in the HTTP front routes anywhere but the proxy (no direct route to workspaces)
    assert {tuple(d.args) for d in walk(http.block) if d.name == "proxy_pass"} == {("http://chp",)}
    for server in find(http.block, "server"):
        assert find(server.block, "location") or find(server.block, "return"), server
    headers = {d.args[0] for d in walk(http.block) if d.name == "add_header"}
    assert {"X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"} <= headers


@pytest.mark.parametrize("env", FRONT_LAYOUTS.values(), ids=FRONT_LAYOUTS.keys())
def test_stream_only_forwards_to_loopback_listeners_of_this_config(env):
    conf = nginx(env)
    stream = find(conf, "stream")
    if env["SSL_ENABLED"] == "false":
        assert stream == []
        return
    targets = [d.args[0] for d in walk(stream[0].block) if d.name == "proxy_pass"]
    targets += [d.args[0] for d in walk(stream[0].block) if d.name in {"", "default"}]
    targets = [t for t in targets if not t.startswith("$")]
    local = {d.args[0] for d in walk(conf) if d.name == "listen"}
    sslh = set(options(sslh_argv(env), "listen")) if "START_SSH" not in env else set()
    for target in targets:
        assert target.startswith("127.0.0.1:") and target in local | sslh, target


def test_sslh_http_target_is_the_nginx_server_that_expects_plain_http():
    for env, expected_listen in ((TLS_OFF, "127.0.0.1:8090"), (TLS_ON, "127.0.0.1:8091")):
        http = one(nginx(env), "http")
        plain_servers = [s for s in find(http.block, "server") if listens(s) == [[expected_listen]]]
        assert len(plain_servers) == 1, env
        assert options(sslh_argv(env), "http") == [expected_listen]


# --- sshd_config ----------------------------------------------------------------------------


def sshd_options(text):
    options = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, value = line.partition(" ")
            options.setdefault(keyword.lower(), []).append(value.strip())
    return options


def test_sshd_is_a_tunnel_only_jump_host_on_loopback():
    conf = sshd_options(L.render_sshd(make_layout(), KEYS_COMMAND))
    # sshd takes the first value of a keyword: each one must be set once
    repeated = {k: v for k, v in conf.items() if len(v) > 1 and k not in {"hostkey", "listenaddress"}}
    assert repeated == {}
    expected = {
        "listenaddress": "127.0.0.1:2222",
        "allowusers": "tunnel",
        "permitrootlogin": "no",
        "authenticationmethods": "publickey",
        "pubkeyauthentication": "yes",
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "hostbasedauthentication": "no",
        "authorizedkeysfile": "none",
        "authorizedkeyscommand": f"{KEYS_COMMAND} %u %t %k",
        "authorizedkeyscommanduser": "mlhub-keys",
        "allowtcpforwarding": "local",
        "allowagentforwarding": "no",
        "allowstreamlocalforwarding": "no",
        "x11forwarding": "no",
        "permittty": "no",
        "permittunnel": "no",
        "permituserrc": "no",
        "permituserenvironment": "no",
        "gatewayports": "no",
        "permitlisten": "none",
        "forcecommand": "/usr/sbin/nologin",
    }
    assert {k: conf.get(k, [None])[0] for k in expected} == expected
    assert conf["listenaddress"] == ["127.0.0.1:2222"]
    assert conf["hostkey"] == list(HOST_KEYS)


# --- own container id and front addresses (container.py) ------------------------------------

CONTAINER_ID = "4f1c0a9e" * 8
MOUNTINFO = f"""\
1461 1340 0:363 / / rw,relatime master:588 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC
1462 1461 0:366 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1474 1461 259:2 /var/lib/docker/containers/{CONTAINER_ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/nvme0n1p2 rw
1475 1461 259:2 /var/lib/docker/containers/{CONTAINER_ID}/hostname /etc/hostname rw,relatime - ext4 /dev/nvme0n1p2 rw
1476 1461 259:2 /var/lib/docker/containers/{CONTAINER_ID}/hosts /etc/hosts rw,relatime - ext4 /dev/nvme0n1p2 rw
1477 1461 0:34 /docker.sock /run/docker.sock rw,nosuid,nodev - tmpfs tmpfs rw
"""


def test_own_container_id_from_the_engines_bind_mounts(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    assert container.own_container_id(mountinfo, hostname="4f1c0a9e4f1c") == CONTAINER_ID


def test_own_container_id_falls_back_to_the_hostname(tmp_path, monkeypatch):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("\n".join(line for line in MOUNTINFO.splitlines() if "/containers/" not in line))
    assert container.own_container_id(mountinfo, hostname="hub-7") == "hub-7"
    assert container.own_container_id(tmp_path / "missing", hostname="hub-7") == "hub-7"
    monkeypatch.setenv("HOSTNAME", "from-env")
    assert container.own_container_id(tmp_path / "missing") == "from-env"


class FakeAPI:
    def __init__(self, attrs):
        self.attrs = attrs

    def inspect_container(self, container_id):
        return self.attrs


class FakeClient:
    def __init__(self, attrs):
        self.api = FakeAPI(attrs)


def test_front_addresses_leave_out_the_user_networks():
    attrs = {
        "HostConfig": {"NetworkMode": "mlhub-front"},
        "NetworkSettings": {
            "Networks": {
                "mlhub-front": {"NetworkID": "front-id", "IPAddress": "172.18.0.5"},
                "mlhub-alice": {"NetworkID": "alice-id", "IPAddress": "10.1.0.2"},
                "ipv6-only": {"NetworkID": "v6-id", "IPAddress": ""},
            }
        },
    }
    assert container.front_addresses(FakeClient(attrs), CONTAINER_ID, {"alice-id"}) == ["172.18.0.5"]


def test_host_network_mode_is_refused():
    attrs = {"HostConfig": {"NetworkMode": "host"}, "NetworkSettings": {"Networks": {}}}
    with pytest.raises(ValueError, match="--network host"):
        container.front_addresses(FakeClient(attrs), CONTAINER_ID, set())


def test_proxy_pod_of_the_chart_points_the_proxy_at_the_hub_service():
    """The chart's proxy pod: CHP beside nginx and sshd, the hub in another pod behind its Service."""
    env = {
        "START_JHUB": "false",
        "START_CHP": "true",
        "MLHUB_HUB_SERVICE_URL": "http://mlhub-hub:8081",
        "MLHUB_PROXY_API_LISTEN": "0.0.0.0",
    }
    argv, _ = rendered_programs(env)["configurable-http-proxy"]
    assert "--api-ip=0.0.0.0" in argv  # the hub pod reaches the proxy's API through its Service
    assert "--ip=127.0.0.1" in argv  # the public side stays behind nginx
    assert "--default-target=http://mlhub-hub:8081" in argv
    assert "--error-target=http://mlhub-hub:8081/hub/error" in argv
    assert make_layout(env, FRONT).hub_url == "http://mlhub-hub:8081"
