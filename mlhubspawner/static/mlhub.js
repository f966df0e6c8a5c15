// ML Hub's pages (home, admin, SSH keys). Data comes from data- attributes and the JSON block
// <script type="application/json" id="mlhub-data">; every user-provided value is written with
// textContent, never as HTML.
(function () {
  "use strict";

  function xsrfToken() {
    if (window.jhdata && window.jhdata.xsrf_token) {
      return window.jhdata.xsrf_token;
    }
    var match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function withXsrf(url) {
    var token = xsrfToken();
    if (!token) {
      return url;
    }
    return url + (url.indexOf("?") === -1 ? "?" : "&") + "_xsrf=" + encodeURIComponent(token);
  }

  // fetch a hub API URL with the page's XSRF token; resolves to the parsed JSON body (or null),
  // rejects with an Error whose message is the hub's message
  function api(method, url, body) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { "X-XSRFToken": xsrfToken(), Accept: "application/json" },
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(withXsrf(url), options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        if (text) {
          try {
            data = JSON.parse(text);
          } catch (e) {
            data = null;
          }
        }
        if (!response.ok) {
          var message = (data && data.message) || response.status + " " + response.statusText;
          throw new Error(message);
        }
        return data;
      });
    });
  }

  function pageData() {
    var node = document.getElementById("mlhub-data");
    if (!node) {
      return { rows: [] };
    }
    try {
      return JSON.parse(node.textContent || "{}") || { rows: [] };
    } catch (e) {
      return { rows: [] };
    }
  }

  function showError(message) {
    var box = document.getElementById("mlhub-error");
    if (box) {
      box.textContent = message;
      box.classList.remove("d-none");
    } else {
      window.alert(message);
    }
  }

  // --- the dialog (Info, SSH) -------------------------------------------------------------------
  function openDialog(title, text, copyable) {
    var dialog = document.getElementById("mlhub-dialog");
    if (!dialog) {
      return;
    }
    document.getElementById("mlhub-dialog-title").textContent = title;
    document.getElementById("mlhub-dialog-text").textContent = text;
    document.getElementById("mlhub-copy").hidden = !copyable;
    document.getElementById("mlhub-copy-status").textContent = "";
    dialog.hidden = false;
  }

  function closeDialog() {
    var dialog = document.getElementById("mlhub-dialog");
    if (dialog) {
      dialog.hidden = true;
    }
  }

  function copyDialogText() {
    var text = document.getElementById("mlhub-dialog-text").textContent;
    var status = document.getElementById("mlhub-copy-status");
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (e) {
        ok = false;
      }
      document.body.removeChild(area);
      status.textContent = ok ? "Copied." : "Select the text and copy it.";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () {
        status.textContent = "Copied.";
      }, fallback);
    } else {
      fallback();
    }
  }

  // --- workspace rows (home and admin) ----------------------------------------------------------
  function rowOf(element, rows) {
    var tr = element.closest("tr.mlhub-workspace");
    if (!tr) {
      return null;
    }
    return rows[Number(tr.getAttribute("data-index"))] || null;
  }

  function label(row) {
    return row.user + "/" + (row.server || "default");
  }

  function reloadSoon() {
    window.setTimeout(function () {
      window.location.reload();
    }, 500);
  }

  function disable(button) {
    button.disabled = true;
  }

  var actions = {
    "mlhub-info": function (row) {
      openDialog("Workspace info: " + label(row), JSON.stringify(row.info || {}, null, 2), false);
    },
    "mlhub-ssh": function (row, button) {
      // the dialog opens once the config is there (never with a placeholder text)
      disable(button);
      api("GET", row.ssh_config_api).then(
        function (data) {
          button.disabled = false;
          var text = data.config;
          if (data.command) {
            text += "\n# or, without a config file:\n# " + data.command + "\n";
          }
          openDialog("SSH access: " + label(row), text, true);
        },
        function (error) {
          button.disabled = false;
          openDialog("SSH access: " + label(row), "Error: " + error.message, false);
        },
      );
    },
    "mlhub-start": function (row, button) {
      if (!row.started) {
        window.location.href = row.spawn_url; // never started: the options form
        return;
      }
      disable(button);
      api("POST", row.server_api).then(
        function () {
          window.location.href = row.pending_url;
        },
        function (error) {
          button.disabled = false;
          showError("Could not start " + label(row) + ": " + error.message);
        },
      );
    },
    "mlhub-stop": function (row, button) {
      disable(button);
      api("DELETE", row.server_api).then(reloadSoon, function (error) {
        button.disabled = false;
        showError("Could not stop " + label(row) + ": " + error.message);
      });
    },
    "mlhub-delete": function (row, button) {
      if (!window.confirm("Delete workspace " + label(row) + " and its data?")) {
        return;
      }
      disable(button);
      api("DELETE", row.server_api, { remove: true }).then(reloadSoon, function (error) {
        button.disabled = false;
        showError("Could not delete " + label(row) + ": " + error.message);
      });
    },
    "mlhub-update": function (row, button) {
      if (!window.confirm("Recreate " + label(row) + " from its new image? Its /workspace volume is kept.")) {
        return;
      }
      disable(button);
      api("POST", row.update_api).then(
        function () {
          window.location.href = row.pending_url;
        },
        function (error) {
          button.disabled = false;
          showError("Could not update " + label(row) + ": " + error.message);
        },
      );
    },
    "mlhub-extend": function (row, button) {
      var current = row.info && row.info.days_to_live;
      var answer = window.prompt(
        "Lifetime of " + label(row) + " in days, counted from its creation:",
        current ? String(current) : "7",
      );
      if (answer === null) {
        return;
      }
      var days = Number(answer);
      if (!answer.trim() || !isFinite(days) || days <= 0) {
        showError("The lifetime must be a positive number of days.");
        return;
      }
      disable(button);
      api("POST", row.lifetime_api, { days_to_live: days }).then(reloadSoon, function (error) {
        button.disabled = false;
        showError("Could not change the lifetime of " + label(row) + ": " + error.message);
      });
    },
  };

  // Update: offered only when the image behind a running workspace's tag changed
  function offerUpdates(table, rows) {
    table.querySelectorAll("button.mlhub-update").forEach(function (button) {
      var row = rowOf(button, rows);
      if (!row) {
        return;
      }
      api("GET", row.update_api).then(
        function (data) {
          button.hidden = !data.update_available;
        },
        function () {
          button.hidden = true;
        },
      );
    });
  }

  function initWorkspaces() {
    var tables = document.querySelectorAll("#mlhub-workspaces, #mlhub-all-workspaces");
    if (!tables.length) {
      return;
    }
    var rows = pageData().rows || [];
    tables.forEach(function (table) {
      offerUpdates(table, rows);
      table.addEventListener("click", function (event) {
        var button = event.target.closest("button");
        if (!button) {
          return;
        }
        var row = rowOf(button, rows);
        if (!row) {
          return;
        }
        Object.keys(actions).forEach(function (cls) {
          if (button.classList.contains(cls)) {
            actions[cls](row, button);
          }
        });
      });
    });
  }

  function initDialog() {
    var dialog = document.getElementById("mlhub-dialog");
    if (!dialog) {
      return;
    }
    document.getElementById("mlhub-dialog-close").addEventListener("click", closeDialog);
    document.getElementById("mlhub-copy").addEventListener("click", copyDialogText);
    dialog.addEventListener("click", function (event) {
      if (event.target === dialog) {
        closeDialog();
      }
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        closeDialog();
      }
    });
  }

  // --- "New workspace" (home) and "Create a workspace for a user" (admin) -----------------------
  function spawnUrl(base, user, name) {
    return base + "spawn/" + encodeURIComponent(user) + "/" + encodeURIComponent(name);
  }

  var NAME_PATTERN = /^[^\/\s?#%]+$/;

  function initNewWorkspace() {
    var link = document.getElementById("mlhub-new-workspace");
    var input = document.getElementById("mlhub-new-name");
    var form = document.getElementById("mlhub-new-form");
    if (!link || !input || !form) {
      return;
    }
    var base = (window.jhdata && window.jhdata.base_url) || "/hub/";
    var user = form.getAttribute("data-user");
    function go(event) {
      event.preventDefault();
      var name = input.value.trim();
      if (!NAME_PATTERN.test(name)) {
        showError("Enter a workspace name (no spaces, /, ?, # or %).");
        input.focus();
        return;
      }
      window.location.href = spawnUrl(base, user, name);
    }
    link.addEventListener("click", go);
    form.addEventListener("submit", go);
    input.addEventListener("input", function () {
      var name = input.value.trim();
      link.setAttribute("href", NAME_PATTERN.test(name) ? spawnUrl(base, user, name) : "#");
    });
  }

  function initAdminCreate() {
    var button = document.getElementById("mlhub-admin-create");
    if (!button) {
      return;
    }
    var base = (window.jhdata && window.jhdata.base_url) || "/hub/";
    function go(event) {
      event.preventDefault();
      var user = document.getElementById("mlhub-admin-user").value;
      var name = document.getElementById("mlhub-admin-name").value.trim();
      if (!user) {
        showError("Choose a user.");
        return;
      }
      if (name && !NAME_PATTERN.test(name)) {
        showError("Enter a workspace name (no spaces, /, ?, # or %).");
        return;
      }
      window.location.href = name ? spawnUrl(base, user, name) : base + "spawn/" + encodeURIComponent(user);
    }
    button.addEventListener("click", go);
    var form = document.getElementById("mlhub-admin-create-form");
    if (form) {
      form.addEventListener("submit", go);
    }
  }

  // admin page: probe the engine for GPUs again, then show the new inventory
  function initGpuRefresh() {
    var button = document.getElementById("mlhub-gpus-refresh");
    if (!button) {
      return;
    }
    button.addEventListener("click", function () {
      disable(button);
      api("POST", button.getAttribute("data-api")).then(
        function () {
          window.location.reload();
        },
        function (error) {
          button.disabled = false;
          showError("Could not look for GPUs: " + error.message);
        },
      );
    });
  }

  // --- SSH keys page ------------------------------------------------------------------------------
  function renderKeys(list, keys) {
    while (list.firstChild) {
      list.removeChild(list.firstChild);
    }
    if (!keys.length) {
      var empty = document.createElement("li");
      empty.className = "list-group-item text-muted mlhub-no-keys";
      empty.textContent = "No SSH keys yet.";
      list.appendChild(empty);
      return;
    }
    keys.forEach(function (key) {
      var li = document.createElement("li");
      li.className = "list-group-item d-flex justify-content-between align-items-center mlhub-key";
      li.setAttribute("data-fingerprint", key.fingerprint);
      var text = document.createElement("div");
      var type = document.createElement("span");
      type.className = "mlhub-key-type fw-bold me-2";
      type.textContent = key.type + (key.bits ? " (" + key.bits + " bits)" : "");
      var comment = document.createElement("span");
      comment.className = "mlhub-key-comment me-2";
      comment.textContent = key.comment || "";
      var fingerprint = document.createElement("code");
      fingerprint.className = "mlhub-key-fingerprint d-block small";
      fingerprint.textContent = key.fingerprint;
      text.appendChild(type);
      text.appendChild(comment);
      if (key.proven === false) {
        var unproven = document.createElement("span");
        unproven.className = "mlhub-key-unproven badge text-bg-warning me-2";
        unproven.title =
          "Stored before keys needed a signature: add it again with a signature to keep it, " +
          "or whoever proves they hold it takes it over.";
        unproven.textContent = "unverified";
        text.appendChild(unproven);
      }
      text.appendChild(fingerprint);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "mlhub-delete-key btn btn-sm btn-outline-danger";
      button.textContent = "Delete";
      li.appendChild(text);
      li.appendChild(button);
      list.appendChild(li);
    });
  }

  function initSSHKeys() {
    var page = document.getElementById("mlhub-ssh-keys-page");
    if (!page) {
      return;
    }
    var keysApi = page.getAttribute("data-keys-api");
    var list = document.getElementById("mlhub-keys");
    var textarea = document.getElementById("mlhub-key");
    var addButton = document.getElementById("mlhub-add-key");
    var errorBox = document.getElementById("mlhub-key-error");
    var challengeApi = page.getAttribute("data-challenge-api");
    var challengeInput = document.getElementById("mlhub-challenge");
    var commandBox = document.getElementById("mlhub-sign-command");
    var signatureBox = document.getElementById("mlhub-signature");
    var newChallenge = document.getElementById("mlhub-new-challenge");
    var signCommand = "";

    function setError(message) {
      errorBox.textContent = message || "";
      errorBox.hidden = !message;
    }

    // the private key file ssh-keygen makes by default for the pasted key's type
    function keyFile(line) {
      var type = (line.trim().split(/\s+/)[0] || "").toLowerCase();
      if (type === "ssh-rsa") {
        return "~/.ssh/id_rsa";
      }
      if (type.indexOf("ecdsa-") === 0) {
        return "~/.ssh/id_ecdsa";
      }
      if (type === "sk-ssh-ed25519@openssh.com") {
        return "~/.ssh/id_ed25519_sk";
      }
      if (type === "sk-ecdsa-sha2-nistp256@openssh.com") {
        return "~/.ssh/id_ecdsa_sk";
      }
      return "~/.ssh/id_ed25519";
    }

    function showCommand() {
      commandBox.textContent = signCommand.replace("~/.ssh/id_ed25519", keyFile(textarea.value));
    }

    // a fresh challenge (single use, 10 minutes) and the command that signs it
    function loadChallenge() {
      return api("GET", challengeApi).then(
        function (data) {
          challengeInput.value = data.challenge;
          signCommand = data.command;
          signatureBox.value = "";
          showCommand();
        },
        function (error) {
          commandBox.textContent = "";
          setError("Could not get a challenge: " + error.message);
        },
      );
    }

    textarea.addEventListener("input", showCommand);
    newChallenge.addEventListener("click", function () {
      setError("");
      loadChallenge();
    });
    loadChallenge();

    function refresh() {
      return api("GET", keysApi).then(
        function (keys) {
          renderKeys(list, keys || []);
        },
        function (error) {
          setError("Could not list the keys: " + error.message);
        },
      );
    }

    addButton.addEventListener("click", function () {
      var key = textarea.value.trim();
      var signature = signatureBox.value.trim();
      if (!key) {
        setError("Paste one line of an OpenSSH public key (.pub file).");
        return;
      }
      if (!signature) {
        setError("Run the command of step 2 and paste the signature it prints.");
        return;
      }
      addButton.disabled = true;
      api("POST", keysApi, { key: key, challenge: challengeInput.value, signature: signature })
        .then(
          function () {
            textarea.value = "";
            setError("");
            return Promise.all([refresh(), loadChallenge()]);
          },
          function (error) {
            setError(error.message);
            if (/expired|used already|not issued/.test(error.message)) {
              return loadChallenge();
            }
          },
        )
        .then(function () {
          addButton.disabled = false;
        });
    });

    list.addEventListener("click", function (event) {
      var button = event.target.closest("button.mlhub-delete-key");
      if (!button) {
        return;
      }
      var li = button.closest("li[data-fingerprint]");
      var fingerprint = li.getAttribute("data-fingerprint");
      button.disabled = true;
      api("DELETE", keysApi + "/" + encodeURIComponent(fingerprint)).then(
        function () {
          setError("");
          return refresh();
        },
        function (error) {
          button.disabled = false;
          setError(error.message);
        },
      );
    });
  }

  function init() {
    initDialog();
    initWorkspaces();
    initNewWorkspace();
    initAdminCreate();
    initGpuRefresh();
    initSSHKeys();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
