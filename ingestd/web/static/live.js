// SmallTable live view: new records from the project's /_tail server-sent events
// are added to the top of the records table, drawn like the server draws its rows
// (templates/smalltable_project.html and _smalltable_macros.html). EventSource
// reconnects by itself and sends Last-Event-ID, so nothing is missed after a drop.
(function () {
  "use strict";
  const MAX_ROWS = 500;
  const table = document.getElementById("st-records");
  const toggle = document.getElementById("st-live");
  const status = document.getElementById("st-live-status");
  if (!table || !toggle) return;
  const tbody = table.tBodies[0];
  const systemColumns = new Set(JSON.parse(table.dataset.systemColumns));
  const maxFields = Number(table.dataset.maxFields);
  const previewChars = Number(table.dataset.previewChars);
  const cellChars = Number(table.dataset.cellChars);
  let source = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    node.append(...children);
    return node;
  }

  function formatBytes(n) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
    return unit === 0 ? n + " bytes" : n.toFixed(1) + " " + units[unit];
  }

  function cut(text) {
    return text.length <= cellChars ? text : text.slice(0, cellChars - 1) + "…";
  }

  // A record's own fields, as pages.record_fields finds them: a JSON object's
  // top-level keys, typed as JSON; any other record's non-empty columns.
  function ownFields(record) {
    if (record._kind === "json" && typeof record._body === "string") {
      try {
        const value = JSON.parse(record._body);
        if (value !== null && typeof value === "object" && !Array.isArray(value)) {
          return Object.entries(value).map(([key, item]) =>
            [key, cut(typeof item === "string" ? item : JSON.stringify(item))]);
        }
      } catch (error) { /* not JSON after all: its columns, as below */ }
    }
    return Object.entries(record)
      .filter(([key, item]) => !systemColumns.has(key) && item !== null && item !== undefined)
      .map(([key, item]) => [key, cut(typeof item === "object" ? "<binary>" : String(item))]);
  }

  function fields(record) {
    const found = ownFields(record);
    if (!found.length) return "";
    const list = el("dl", {class: "st-field-list"},
      ...found.slice(0, maxFields).map(([key, text]) => el("div", {}, el("dt", {}, key), el("dd", {}, text))));
    if (found.length <= maxFields) return list;
    const more = el("span", {}, list, el("a", {href: "/" + record._id, class: "st-muted"}, "more fields…"));
    return more;
  }

  function body(record) {
    const id = record._id;
    const kind = record._kind;
    const type = (record._content_type || "").toLowerCase();
    if (kind === "empty") return el("span", {class: "st-muted"}, "empty body");
    if (kind === "multipart") return el("a", {href: "/" + id}, "files");
    if ((kind === "binary" || kind === "text") && type.startsWith("image/")) {
      return el("a", {href: "/" + id},
        el("img", {class: "st-thumb", src: "/" + id + "/raw", alt: "image posted as record " + id}));
    }
    if (kind === "binary" || typeof record._body !== "string") {
      return el("span", {},
        el("a", {href: "/" + id + "/raw", download: ""}, "download"), " ",
        el("span", {class: "st-muted"},
          formatBytes(record._size) + ", " + (record._content_type || "no content type")));
    }
    const text = el("span", {class: "st-text"}, record._body.slice(0, previewChars));
    if (record._body.length > previewChars) text.append(el("a", {href: "/" + id, title: "the whole body"}, "…"));
    return text;
  }

  function row(record) {
    const request = record._path + (record._query != null ? "?" + record._query : "");
    const tr = el("tr", {id: "r" + record._id, "data-request-id": record._request_id, class: "st-new"},
      el("td", {}, el("a", {href: "/" + record._id}, String(record._id))),
      el("td", {class: "st-nowrap"},
        el("time", {datetime: record._received}, record._received.slice(0, 19).replace("T", " "))),
      el("td", {}, record._method + " " + request),
      el("td", {title: record._content_type || ""}, record._kind),
      el("td", {class: "st-nowrap"}, formatBytes(record._size)),
      el("td", {class: "st-fields"}, fields(record)),
      el("td", {class: "st-body"}, body(record)));
    return tr;
  }

  function dropOldest() {
    while (tbody.rows.length > MAX_ROWS) {
      tbody.deleteRow(-1);
      const older = document.getElementById("st-older");
      const oldest = tbody.rows[tbody.rows.length - 1];
      if (older && oldest) older.href = "?before=" + oldest.id.slice(1);
    }
  }

  function onRecord(event) {
    const record = JSON.parse(event.data);
    if (document.getElementById("r" + record._id)) return;
    tbody.prepend(row(record));
    dropOldest();
    const empty = document.getElementById("st-empty");
    if (empty) empty.remove();
    const count = document.getElementById("st-record-count");
    if (count) count.textContent = (Number(count.textContent.replace(/,/g, "")) + 1).toLocaleString("en-US");
  }

  function start() {
    // ?after= closes the gap between rendering the page and connecting; on a
    // reconnect, Last-Event-ID (the last record received) takes over.
    const newest = tbody.rows.length ? tbody.rows[0].id.slice(1) : table.dataset.newest;
    source = new EventSource("/_tail?after=" + encodeURIComponent(newest));
    source.addEventListener("record", onRecord);
    source.onopen = () => { status.textContent = "live"; };
    source.onerror = () => { status.textContent = "reconnecting…"; };
  }

  function stop() {
    if (source) source.close();
    source = null;
    status.textContent = "";
  }

  toggle.addEventListener("change", () => {
    localStorage.setItem("smalltable-live", toggle.checked ? "on" : "off");
    if (toggle.checked) start(); else stop();
  });
  const asked = new URLSearchParams(location.search).get("live");
  toggle.checked = asked !== null ? asked !== "0" : localStorage.getItem("smalltable-live") === "on";
  if (toggle.checked) start();
})();
