// Wallboard: queues (waiting callers, longest wait, agents by state) and live calls from
// the live feed; the 15-second and answer rates of the last 24 hours from /api/levels.
import { api, clock, el, feed, onLanguage, percent, seconds, start } from "./console.js";
import { t } from "./i18n.js";

const STATES = ["available", "in_call", "ringing", "wrapup", "paused", "unavailable"];
const MAX_ROWS = 200;
const BUSIEST = ["in_call", "ringing", "wrapup", "paused", "available", "unavailable"];
const view = { queues: null, calls: null, stats: null, levels: null, levelsError: false };

// a rate over no offered call is no figure
function rate(figures, key) {
  return figures && figures.offered > 0 ? percent(figures[key]) : "—";
}

function tile(id, label, value) {
  return el("div", { class: "tile", id }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

function render() {
  const main = document.getElementById("main");
  const queues = view.queues || [];
  const total = view.levels ? view.levels.total : null;
  const byQueue = new Map((view.levels ? view.levels.queues : []).map((q) => [q.queue, q]));
  const waiting = queues.reduce((n, q) => n + q.waiting, 0);
  const longest = queues.reduce((m, q) => Math.max(m, q.longest_wait_s), 0);
  const agents = Object.fromEntries(STATES.map((s) => [s, 0]));
  const seen = new Map();
  for (const q of queues) for (const a of q.agents) {
    // one agent in several queues counts once, in its busiest state
    const prev = seen.get(a.interface);
    if (prev === undefined || BUSIEST.indexOf(a.state) < BUSIEST.indexOf(prev)) seen.set(a.interface, a.state);
  }
  for (const s of seen.values()) agents[s] = (agents[s] || 0) + 1;

  const tiles = el("section", { class: "tiles" },
    tile("tile-waiting", t("waiting_total"), waiting),
    tile("tile-longest", t("longest_wait"), seconds(longest)),
    tile("tile-rate15", t("rate15_24h"), rate(total, "answer_rate_15s")),
    tile("tile-rate", t("rate_24h"), rate(total, "answer_rate")),
    tile("tile-offered", t("offered_24h"), total ? total.offered : "—"),
    tile("tile-rate15-process", t("rate15_now"), rate(view.stats, "answer_rate_15s")));

  const stateBar = el("section", { class: "states", id: "agents-by-state" },
    el("h2", {}, t("agents_by_state")),
    ...STATES.map((s) => el("span", { class: `state state-${s}`, "data-state": s }, `${t(s)} `, el("b", {}, agents[s]))));

  const head = el("tr", {}, el("th", {}, t("queue")), el("th", {}, t("waiting")), el("th", {}, t("longest_wait")),
    ...STATES.map((s) => el("th", {}, t(s))), el("th", {}, t("rate15_24h")), el("th", {}, t("rate_24h")));
  const rows = queues.map((q) => {
    const lv = byQueue.get(q.queue);
    return el("tr", { "data-queue": q.queue },
      el("td", {}, q.queue), el("td", { class: "waiting" }, q.waiting), el("td", {}, seconds(q.longest_wait_s)),
      ...STATES.map((s) => el("td", { class: `n-${s}` }, q.agents_by_state[s] ?? 0)),
      el("td", { class: "rate15" }, rate(lv && lv.last_24h, "answer_rate_15s")),
      el("td", { class: "rate" }, rate(lv && lv.last_24h, "answer_rate")));
  });
  const table = el("table", { id: "queues" }, el("thead", {}, head), el("tbody", {}, rows));

  const callers = [];
  for (const q of queues) for (const c of q.callers) callers.push({ queue: q.queue, ...c });
  callers.sort((a, b) => b.wait_s - a.wait_s);
  const waitingList = el("section", {}, el("h2", {}, t("waiting_callers")),
    callers.length === 0 ? el("p", { class: "empty" }, t("none")) :
      el("table", { id: "callers" }, el("tbody", {}, callers.slice(0, MAX_ROWS).map((c) => el("tr", {},
        el("td", {}, c.queue), el("td", {}, c.number), el("td", {}, seconds(c.wait_s)))))));

  // a busy hotline has thousands of calls up: the longest-running ones are listed
  const all = view.calls || [];
  const calls = all.length > MAX_ROWS ? [...all].sort((a, b) => a.started_at - b.started_at).slice(0, MAX_ROWS) : all;
  const callsTable = el("section", {}, el("h2", {}, t("live_calls"), ` (${all.length})`),
    el("table", { id: "calls" },
      el("thead", {}, el("tr", {}, ...["caller", "dialled", "language", "entry", "queue", "agent", "since"].map((k) => el("th", {}, t(k))))),
      el("tbody", {}, calls.map((c) => el("tr", { "data-call": c.call_id },
        el("td", { class: "caller" }, c.caller ?? "—"), el("td", {}, c.dialled), el("td", {}, c.language ?? "—"),
        el("td", {}, c.entry || "—"), el("td", {}, c.queue ?? "—"), el("td", {}, c.agent ?? "—"),
        el("td", {}, clock(c.started_at)))))));

  main.replaceChildren(tiles, stateBar, el("section", {}, el("h2", {}, t("queue")), table), waitingList, callsTable);
}

// messages coalesced: one render per animation frame at most
let frame = null;
function renderSoon() {
  if (frame === null) frame = requestAnimationFrame(() => { frame = null; render(); });
}

async function levels() {
  lastLevels = Date.now();
  try {
    view.levels = await api("GET", "/api/levels");
  } catch (_) {
    view.levels = null; // no event delivery here: the 24-hour figures are not shown
  }
  render();
}

// the 24-hour figures again soon after the live figures change (at most every 6 s: the
// server keeps them 5 s), and every 15 s anyway
let lastLevels = 0;
let pending = null;
function levelsSoon() {
  if (pending !== null) return;
  const wait = Math.max(0, lastLevels + 6000 - Date.now());
  pending = setTimeout(() => { pending = null; levels(); }, wait);
}

await start("wallboard");
onLanguage(render);
render();
feed((msg) => {
  if (msg.topic === "queues") view.queues = msg.data;
  else if (msg.topic === "calls") view.calls = msg.data;
  else if (msg.topic === "stats") { view.stats = msg.data; levelsSoon(); }
  renderSoon();
});
await levels();
setInterval(levels, 15000);
