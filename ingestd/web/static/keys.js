// SmallTable's "Manage keys" panel on the project page (templates/_smalltable_keys.html,
// docs/keys.md): the owner pastes the owner key, and this script lists, creates and
// revokes the project's keys through GET/POST /_project/keys and DELETE
// /_project/keys/KEY_ID, with the key as "Authorization: Bearer". The key stays in the
// password field: never in a URL, a cookie or storage, and it is cleared, with any new
// key shown, when the page is left (so the back-forward cache does not keep it either).
(function () {
  "use strict";
  const panel = document.getElementById("st-keys");
  if (!panel) return;
  const $ = (id) => document.getElementById(id);
  const field = $("st-keys-owner");
  const status = $("st-keys-status");
  const list = $("st-keys-list");
  const create = $("st-keys-create");
  const fresh = $("st-keys-new");
  const POLL_MS = 100;
  const POLL_TIMES = 100;

  function say(text, bad) {
    status.textContent = text;
    status.classList.toggle("st-bad", Boolean(bad));
  }

  // One call with the owner key; the answer's JSON, or an Error with nginx's reason.
  async function call(method, path, body) {
    const key = field.value.trim();
    if (!key) throw new Error("paste the owner key first");
    const response = await fetch(path, {
      method: method,
      headers: { Authorization: "Bearer " + key, Accept: "application/json", "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    let answer;
    try {
      answer = await response.json();
    } catch (_) {
      answer = { error: "the answer (" + response.status + ") was not JSON" };
    }
    if (!response.ok) throw new Error(answer.error + (answer.fix ? " (" + answer.fix + ")" : ""));
    return answer;
  }

  // A key change is a write: wait until its status URL says applied (or why not).
  async function applied(answer) {
    const path = new URL(answer.status_url).pathname;
    for (let i = 0; i < POLL_TIMES; i += 1) {
      const found = await call("GET", path);
      if (found.status === "applied") return found;
      if (found.status !== "pending") throw new Error(found.reason || found.status);
      await new Promise((done) => setTimeout(done, POLL_MS));
    }
    throw new Error("not applied yet: show the keys again in a moment");
  }

  function cell(row, text) {
    const td = row.insertCell();
    td.textContent = text;
    return td;
  }

  function when(iso) {
    return iso ? iso.slice(0, 19).replace("T", " ") : "never";
  }

  async function show() {
    const answer = await call("GET", "/_project/keys");
    const body = list.tBodies[0];
    body.replaceChildren();
    for (const key of answer.keys) {
      const row = body.insertRow();
      row.dataset.keyId = key.key_id;
      cell(row, key.key_id).className = "st-mono";
      cell(row, key.scope);
      cell(row, key.label || "");
      cell(row, when(key.expires) + (key.expired ? " (expired)" : ""));
      cell(row, when(key.created));
      const action = row.insertCell();
      if (key.scope === "owner") {
        action.textContent = "reset by the operator";
        action.className = "st-muted";
      } else {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Revoke";
        button.className = "st-keys-revoke";
        button.addEventListener("click", () => run(() => revoke(key.key_id)));
        action.append(button);
      }
    }
    list.hidden = false;
    create.disabled = false;
    say(answer.keys.length + (answer.keys.length === 1 ? " live key" : " live keys"));
  }

  async function make() {
    const fields = { scope: $("st-keys-scope").value };
    const label = $("st-keys-label").value.trim();
    const expires = $("st-keys-expires").value;
    if (label) fields.label = label;
    if (expires) fields.expires = new Date(expires + "Z").toISOString();
    const answer = await call("POST", "/_project/keys", fields);
    $("st-keys-new-key").textContent = answer.key;
    $("st-keys-new-id").textContent = answer.key_id;
    fresh.hidden = false;
    try {
      await applied(answer);
    } catch (error) {
      // refused by ingestd (an expiry in the past, …): that key is not in force
      $("st-keys-new-key").textContent = "";
      fresh.hidden = true;
      throw error;
    }
    await show();
    say("key " + answer.key_id + " created: copy it now, it is shown only once");
  }

  async function revoke(keyId) {
    const answer = await call("DELETE", "/_project/keys/" + encodeURIComponent(keyId));
    await applied(answer);
    await show();
    say("key " + keyId + " revoked");
  }

  async function run(action) {
    say("…");
    try {
      await action();
    } catch (error) {
      say(error.message, true);
    }
  }

  function forget() {
    field.value = "";
    $("st-keys-new-key").textContent = "";
    fresh.hidden = true;
    list.hidden = true;
    list.tBodies[0].replaceChildren();
    create.disabled = true;
  }

  $("st-keys-show").addEventListener("click", () => run(show));
  $("st-keys-make").addEventListener("click", () => run(make));
  $("st-keys-forget").addEventListener("click", () => { forget(); say("forgotten"); });
  field.addEventListener("keydown", (event) => {
    if (event.key === "Enter") run(show);
  });
  window.addEventListener("pagehide", forget);
})();
