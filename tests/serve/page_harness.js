// Runs the page's script (static/app.js) under node against a minimal DOM built from
// static/index.html and a scripted fetch, picks a file, and prints what the page then shows.
// Used by test_page.py where no browser is installed. Usage:
//   node page_harness.js STATIC_DIR SCENARIO      (SCENARIO: ok | rejected | unreachable)
"use strict";

const fs = require("fs");
const path = require("path");
const vm = require("vm");

const [staticDir, scenario] = process.argv.slice(2);
const html = fs.readFileSync(path.join(staticDir, "index.html"), "utf8");

function makeElement(tag, id, hidden) {
  const listeners = {};
  const attrs = {};
  const el = {
    tagName: tag.toUpperCase(), id, hidden, textContent: "", dataset: {}, files: [],
    broken: false,
    classList: { add() {}, remove() {} },
    addEventListener(ev, fn) { (listeners[ev] = listeners[ev] || []).push(fn); },
    dispatch(ev, arg) { (listeners[ev] || []).forEach((fn) => fn(arg || { preventDefault() {} })); },
    getAttribute(name) { return name in attrs ? attrs[name] : null; },
    removeAttribute(name) { delete attrs[name]; if (name === "src") el.broken = false; },
  };
  Object.defineProperty(el, "src", {
    get() { return attrs.src || ""; },
    set(v) {
      attrs.src = v;
      // a blob of something that is not a drawable image fails to load, like in a browser
      const blob = blobs.get(v);
      el.broken = Boolean(blob && !blob.drawable);
      if (el.broken) setTimeout(() => el.dispatch("error"), 0);
    },
  });
  return el;
}

// one element per id in the page, with its initial hidden attribute
const elements = {};
const parents = [];
for (const m of html.matchAll(/<(\/?)(\w+)([^>]*)>/g)) {
  const [, closing, tag, rest] = m;
  if (closing) { parents.pop(); continue; }
  const idm = rest.match(/\bid="([^"]+)"/);
  const el = idm ? makeElement(tag, idm[1], /\shidden(\s|$|>)/.test(rest + ">")) : null;
  if (el) { el.parent = parents.filter(Boolean).slice(-1)[0] || null; elements[el.id] = el; }
  if (!/^(img|input|meta|link|br)$/i.test(tag) && !rest.trim().endsWith("/")) parents.push(el);
}

const blobs = new Map();
let nextBlob = 0;
const sandbox = {
  console, setTimeout,
  document: { getElementById: (id) => elements[id] || null },
  URL: {
    createObjectURL(obj) { const u = "blob:" + nextBlob++; blobs.set(u, obj); return u; },
    revokeObjectURL(u) { blobs.delete(u); },
  },
  FormData: class { append() {} },
  fetch: async (url) => {
    if (scenario === "unreachable") throw new TypeError("Failed to fetch");
    if (scenario === "rejected") {
      return { ok: false, status: 415, statusText: "Unsupported Media Type",
               json: async () => ({ detail: "file 1 (notes.png): not a supported image" }) };
    }
    if (url === "/api/v1/predict") {
      return { ok: true, status: 200, json: async () => ({ results: [{
        filename: "photo.png", probability: 0.91, verdict: "generated", threshold: 0.5,
        model_id: "fake-model", error: null, notes: [] }] }) };
    }
    return { ok: true, status: 200, blob: async () => ({ drawable: true }) };
  },
};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(path.join(staticDir, "app.js"), "utf8"), sandbox);

const file = { name: scenario === "ok" ? "photo.png" : "notes.png", drawable: scenario === "ok" };
elements["file-input"].files = [file];
elements["file-input"].dispatch("change");

function shown(el) {
  for (let e = el; e; e = e.parent) if (e.hidden) return false;
  return true;
}

setTimeout(() => {
  const out = {};
  for (const [id, el] of Object.entries(elements)) {
    out[id] = { shown: shown(el), text: el.textContent, src: el.src, broken: el.broken };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}, 100);
