// What every page shares: the session (and its CSRF token), API calls, the live feed,
// the header (navigation by role, language switch, log out).
import { applyI18n, lang, message, setLang, t } from "./i18n.js";

let csrf = null;
let me = null;
const rerenders = [];

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? message(body.message) : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.body = body;
  }
}

export async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") {
    opts.headers["X-CSRF-Token"] = csrf || "";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body ?? {});
  }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (resp.status === 401 && data && data.code === "session_expired") {
    location.replace("/console/login");
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

let docPaths = null;
// The API document's paths (what this server offers: the console shows the actions of
// the routes that exist, e.g. three-way calls once that slice is installed).
export async function offered() {
  if (docPaths === null) {
    const doc = await api("GET", "/api/openapi.json");
    docPaths = doc.paths || {};
  }
  return docPaths;
}

export function onLanguage(fn) { rerenders.push(fn); }

export function can(perm) {
  const PERMS = {
    agent: ["queues.read", "agents.act_self"],
    supervisor: ["queues.read", "agents.act_self", "dialplans.read", "quality.review", "supervision.act"],
    admin: ["queues.read", "agents.act_self", "dialplans.read", "dialplans.publish", "quality.review",
      "supervision.act"],
  };
  return me !== null && (PERMS[me.role] || []).includes(perm);
}

export function whoami() { return me; }

export async function start(page) {
  applyI18n();
  let session;
  try {
    session = await api("GET", "/api/session");
  } catch (e) {
    location.replace("/console/login");
    throw e;
  }
  me = session;
  csrf = session.csrf;
  header(page);
  return session;
}

function header(page) {
  const nav = document.getElementById("nav");
  nav.replaceChildren();
  const links = [["wallboard", "nav_wallboard", "queues.read"], ["agent", "nav_agent", "agents.act_self"],
    ["dialplans", "nav_dialplans", "dialplans.read"], ["review", "nav_review", "quality.review"],
    ["supervise", "nav_supervise", "supervision.act"]];
  for (const [name, key, perm] of links) {
    if (!can(perm)) continue;
    nav.append(el("a", { href: `/console/${name}`, id: `nav-${name}`, "data-i18n": key,
      class: name === page ? "active" : null }, t(key)));
  }
  const user = document.getElementById("user");
  user.textContent = `${me.name || me.token_id} · ${me.role}${me.agent ? " · " + me.agent : ""}`;
  const sw = document.getElementById("lang");
  sw.textContent = t("lang_switch");
  sw.onclick = () => {
    setLang(lang() === "zh" ? "en" : "zh");
    sw.textContent = t("lang_switch");
    for (const fn of rerenders) fn();
  };
  document.getElementById("logout").onclick = async () => {
    try { await api("DELETE", "/api/session"); } finally { location.replace("/console/login"); }
  };
}

// The topics the feed sends as deltas, and the keys of their entries (ivr/api/feed.py
// DELTA_KEYS / NESTED_KEYS; docs/api.md "Deltas").
const DELTA_KEYS = { calls: "call_id", queues: "queue" };
const NESTED_KEYS = { agents: "interface", callers: "uniqueid" };

function mergeList(list, delta, key) {
  const gone = new Set(delta.remove || []);
  const byKey = new Map();
  for (const e of list || []) if (!gone.has(e[key])) byKey.set(e[key], e);
  for (const e of delta.upsert || []) byKey.set(e[key], e);  // a changed one keeps its place
  return [...byKey.values()];
}

// A topic's whole data after a delta: calls come whole; a changed queue carries only its
// changed fields, its agents and callers as {upsert, remove}.
export function applyDelta(data, msg) {
  if (msg.topic !== "queues") return mergeList(data, msg, DELTA_KEYS[msg.topic]);
  const gone = new Set(msg.remove || []);
  const byKey = new Map();
  for (const q of data || []) if (!gone.has(q.queue)) byKey.set(q.queue, q);
  for (const part of msg.upsert || []) {
    const old = byKey.get(part.queue);
    if (!old) { byKey.set(part.queue, part); continue; }
    const merged = { ...old };
    for (const [field, value] of Object.entries(part)) {
      const nested = NESTED_KEYS[field] && value && typeof value === "object" && !Array.isArray(value);
      merged[field] = nested ? mergeList(old[field], value, NESTED_KEYS[field]) : value;
    }
    byKey.set(part.queue, merged);
  }
  return [...byKey.values()];
}

// The live feed (WebSocket /api/feed) with the session: the first message carries the
// CSRF token (the cookie goes with the upgrade) and asks for deltas (thousands of calls:
// only what changed travels); the pages still get each topic whole. On a drop it
// reconnects with the last seq seen and gets what it missed.
export function feed(onMessage) {
  let since = null;
  let delay = 500;
  const topics = {};  // topic -> its whole data, as the deltas build it
  const status = document.getElementById("feed-status");
  const show = (key) => {
    if (status) { status.dataset.state = key; status.dataset.i18n = key; status.textContent = t(key); }
  };
  const connect = () => {
    show("connecting");
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/feed`);
    ws.onopen = () => ws.send(JSON.stringify({ csrf, since, deltas: true }));
    ws.onmessage = (ev) => {
      let msg = JSON.parse(ev.data);
      if (msg.type === "hello") { show("live"); delay = 500; return; }
      if (msg.type === "error") return;
      if (typeof msg.seq === "number") since = msg.seq;
      if (msg.type === "delta") {
        msg = { seq: msg.seq, type: "change", topic: msg.topic,
                data: applyDelta(topics[msg.topic], msg) };
      }
      if (msg.topic) topics[msg.topic] = msg.data;
      onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (ev.code === 4401 || ev.code === 4403) { location.replace("/console/login"); return; }
      show("reconnecting");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  connect();
}

export function seconds(s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

export function percent(x) {
  return x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`;
}

export function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString(lang() === "zh" ? "zh-CN" : "en-GB") : "—";
}

export function notice(text, kind = "info") {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = text;
  box.dataset.kind = kind;
}
