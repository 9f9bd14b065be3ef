// Agent panel: my state per queue (live), pause with a catalog reason / resume, the
// current call (caller's language, entry, tags, open tickets) and its actions —
// three-way with a department, 110 or an interpreter, transfer, recording mute — each
// shown enabled only when this server's API offers its route.
import { api, clock, el, feed, notice, offered, onLanguage, start, whoami } from "./console.js";
import { t } from "./i18n.js";

const view = { queues: null, calls: [], reasons: [], iface: null, actions: {}, tickets: {},
  target: "", reason: null, muted: {}, joinQueue: null, name: "" };

// the call actions of the slices, found in the API document by what their path says
const THREEWAY = /^\/api\/calls\/\{[^}]+\}\/threeway$/;
const ACTIONS = [
  // a directory id (e.g. market) or a number typed by the agent
  ["threeway_dept", THREEWAY, () => ({ target: valueOf("target") })],
  ["threeway_110", THREEWAY, () => ({ target: "110" })],
  // the interpreter desk of the caller's language (directory ids interp-<language>)
  ["threeway_interpreter", THREEWAY, (call) => ({
    target: `interp-${call.language && call.language !== "zh" ? call.language : "en"}` })],
  ["transfer", /^\/api\/calls\/\{[^}]+\}\/transfer$/, () => ({ target: valueOf("target"), mode: "blind" })],
  // a toggle: the recording of both directions muted (e.g. while the caller gives a card
  // number), then back
  ["recording_mute", /^\/api\/calls\/\{[^}]+\}\/recording\/mute$/,
    (call) => ({ direction: "both", on: !view.muted[call.call_id] }),
    (call, answer) => { view.muted[call.call_id] = answer.muted; }],
];

function valueOf(id) {
  const input = document.getElementById(id);
  return input ? input.value.trim() : "";
}

function memberships() {
  const out = [];
  for (const q of view.queues || []) for (const a of q.agents) if (a.interface === view.iface) out.push(a);
  return out;
}

function currentCall() {
  const mine = (view.calls || []).filter((c) => c.agent_interface === view.iface);
  mine.sort((a, b) => b.started_at - a.started_at);
  return mine[0] || null;
}

async function act(label, fn) {
  try {
    await fn();
    notice(`${t(label)}: ${t("done")}`, "ok");
  } catch (e) {
    notice(`${t(label)}: ${e.message}`, "error");
    if (e.status === 404 || e.status === 503) markUnavailable(label);
  }
}

// the server has the route but not the part behind it (404/503): the button stays off
function markUnavailable(label) {
  const key = label === "recording_unmute" ? "recording_mute" : label;
  if (key in view.actions) { delete view.actions[key]; render(); }
}

// open tickets of the caller (besides this call's), once per call
async function loadTickets(callId) {
  view.tickets[callId] = undefined;
  try {
    view.tickets[callId] = (await api("GET", `/api/calls/${encodeURIComponent(callId)}/tickets`)).status;
  } catch (_) {
    view.tickets[callId] = "unavailable";
  }
  render();
}

function render() {
  const main = document.getElementById("main");
  const me = whoami();
  const ifaceBox = me.agent ? el("p", { id: "iface" }, `${t("interface")}: `, el("b", {}, view.iface)) :
    el("p", { id: "iface" }, t("no_interface"), " ",
      el("input", { id: "iface-input", value: view.iface || "", placeholder: "PJSIP/1001",
        onchange: (ev) => { view.iface = ev.target.value.trim(); render(); } }));

  const rows = memberships();
  const state = el("section", { id: "my-state" }, el("h2", {}, t("my_state")), ifaceBox,
    rows.length === 0 ? el("p", { class: "empty" }, t("not_logged_in")) :
      el("table", {}, el("tbody", {}, rows.map((m) => el("tr", { "data-queue": m.queue },
        el("td", {}, m.queue), el("td", { class: `state state-${m.state}`, "data-state": m.state }, t(m.state)),
        el("td", { class: "reason" }, m.paused ? (m.paused_reason || "") : ""))))));

  // log in to a queue (a dynamic member, with a name), log out of the dynamic ones
  const mine = new Set(rows.map((m) => m.queue));
  const free = (view.queues || []).map((q) => q.queue).filter((q) => !mine.has(q));
  const dynamic = rows.filter((m) => m.membership === "dynamic").map((m) => m.queue);
  const queueSelect = el("select", { id: "join-queue", onchange: (ev) => { view.joinQueue = ev.target.value; } },
    free.map((q) => el("option", { value: q, selected: q === view.joinQueue }, q)));
  const membership = el("p", { id: "membership" },
    el("label", { for: "join-queue" }, t("queue"), " "), queueSelect, " ",
    el("input", { id: "agent-name", placeholder: t("agent_name"), value: view.name,
      oninput: (ev) => { view.name = ev.target.value; } }), " ",
    el("button", { id: "login", type: "button", disabled: !view.iface || free.length === 0,
      onclick: () => act("queue_login", () => api("POST", "/api/agents/login", {
        interface: view.iface, name: view.name || view.iface, queues: { [queueSelect.value]: 0 } })) },
    t("queue_login")), " ",
    el("button", { id: "logout-queues", type: "button", disabled: !view.iface || dynamic.length === 0,
      onclick: () => act("queue_logout", () => api("POST", "/api/agents/logout", {
        interface: view.iface, queues: dynamic })) }, t("queue_logout")));

  const select = el("select", { id: "reason", onchange: (ev) => { view.reason = ev.target.value; } },
    view.reasons.map((r) => el("option", { value: r.code, selected: r.code === view.reason }, r.label)));
  const paused = rows.some((m) => m.paused);
  const controls = el("section", { id: "pause-controls" },
    el("label", { for: "reason" }, t("pause_reason"), " "), select, " ",
    el("button", { id: "pause", type: "button", disabled: !view.iface || paused,
      onclick: () => act("pause", () => api("POST", "/api/agents/pause", { interface: view.iface, reason: select.value })) }, t("pause")), " ",
    el("button", { id: "unpause", type: "button", disabled: !view.iface || !paused,
      onclick: () => act("unpause", () => api("POST", "/api/agents/unpause", { interface: view.iface })) }, t("unpause")));

  const call = currentCall();
  if (call !== null && !(call.call_id in view.tickets)) loadTickets(call.call_id);
  let callBox;
  if (call === null) {
    callBox = el("section", { id: "call" }, el("h2", {}, t("current_call")), el("p", { class: "empty" }, t("no_call")));
  } else {
    const tickets = view.tickets[call.call_id];
    callBox = el("section", { id: "call", "data-call": call.call_id }, el("h2", {}, t("current_call")),
      el("dl", {},
        el("dt", {}, t("caller")), el("dd", { id: "call-caller" }, call.caller ?? "—"),
        el("dt", {}, t("language")), el("dd", { id: "call-language" }, call.language ?? "—"),
        el("dt", {}, t("entry")), el("dd", { id: "call-entry" }, call.entry || call.dialled),
        el("dt", {}, t("queue")), el("dd", {}, call.queue ?? "—"),
        el("dt", {}, t("since")), el("dd", {}, clock(call.started_at)),
        el("dt", {}, t("tags")), el("dd", {}, (call.tags || []).join(", ") || "—"),
        el("dt", {}, t("open_tickets")), el("dd", { id: "call-tickets", "data-status": tickets ?? null },
          tickets === undefined ? "…" : t(`tickets_${tickets}`))),
      el("h3", {}, t("actions")),
      el("p", {}, el("label", { for: "target" }, t("target"), " "),
        el("input", { id: "target", placeholder: "market / 2001", value: view.target,
          oninput: (ev) => { view.target = ev.target.value; } })),
      el("p", { class: "actions" }, ACTIONS.map(([label, , make, after]) => {
        const path = view.actions[label];
        const text = label === "recording_mute" && view.muted[call.call_id] ? "recording_unmute" : label;
        return el("button", { id: `act-${label}`, type: "button", disabled: !path,
          title: path ? null : t("not_available"), "data-on": label === "recording_mute" ? String(!!view.muted[call.call_id]) : null,
          onclick: () => act(text, async () => {
            const answer = await api("POST", path.replace(/\{[^}]+\}/, encodeURIComponent(call.call_id)), make(call));
            if (after) { after(call, answer); render(); }
          }) },
        t(text));
      }).flatMap((b) => [b, " "])));
  }
  // the feed re-renders often: what the agent is typing keeps its value and focus
  const active = document.activeElement;
  const focused = active && active.id ? active.id : null;
  const caret = active && typeof active.selectionStart === "number" ? active.selectionStart : null;
  main.replaceChildren(state, membership, controls, callBox, supervisedBox(), scoresBox());
  const again = focused ? document.getElementById(focused) : null;
  if (again) {
    again.focus();
    if (caret !== null && again.setSelectionRange) again.setSelectionRange(caret, caret);
  }
}

// a supervisor listening in on my call (issue 15): shown only when the site's policy says
// so — the API returns sessions on an agent's own calls only then (GET /api/supervision/sessions)
function supervisedBox() {
  const live = (view.supervised || []).filter((s) => s.status === "active" || s.status === "ringing");
  if (live.length === 0) return "";
  return el("p", { id: "supervised", class: "notice", "data-kind": "info" },
    live.map((s) => `${t("supervised")}: ${s.supervisor} · ${t(`mode_${s.mode}`)}`).join("; "));
}

// my quality-review scores (质检, issue 15) and an appeal, once, with a reason
function scoresBox() {
  if (!view.scores) return "";
  const rows = view.scores.map((r) => el("tr", { "data-call": r.call_id },
    el("td", {}, r.day), el("td", {}, r.call_id), el("td", {}, r.queue || "—"),
    el("td", { class: "total" }, `${r.total}/100`), el("td", {}, r.reviewer || "—"),
    el("td", { class: "status" }, t(`status_${r.status}`)),
    el("td", {}, r.status !== "scored" ? (r.appeal ? r.appeal.reason : "") :
      el("span", {}, el("input", { class: "appeal-reason", id: `appeal-${r.call_id}`, placeholder: t("appeal_reason"), size: 16,
        value: (view.appealText || {})[r.call_id] || "",
        oninput: (ev) => { view.appealText = { ...(view.appealText || {}), [r.call_id]: ev.target.value }; } }), " ",
        el("button", { type: "button", class: "appeal", onclick: () => appeal(r.call_id,
          document.getElementById(`appeal-${r.call_id}`).value.trim()) }, t("appeal"))))));
  return el("section", { id: "my-scores" }, el("h2", {}, t("my_scores")),
    rows.length === 0 ? el("p", { class: "empty" }, t("none")) : el("table", {}, el("tbody", {}, rows)));
}

async function loadScores() {
  try {
    view.scores = (await api("GET", "/api/quality/my-scores")).reviews;
  } catch (_) {
    view.scores = null;
  }
  render();
}

async function appeal(callId, reason) {
  if (!reason) { notice(t("appeal_reason"), "error"); return; }
  await act("appeal", () => api("POST", `/api/quality/reviews/${encodeURIComponent(callId)}/appeal`, { reason }));
  await loadScores();
}

async function loadSupervision() {
  try {
    view.supervised = (await api("GET", "/api/supervision/sessions")).sessions;
  } catch (_) {
    view.supervised = [];
  }
  render();
}

const me = await start("agent");
view.iface = me.agent;
onLanguage(render);
try {
  view.reasons = (await api("GET", "/api/agents/pause-reasons")).reasons;
} catch (e) {
  notice(e.message, "error");
}
try {
  const paths = await offered();
  for (const [label, pattern] of ACTIONS) {
    const path = Object.keys(paths).find((p) => pattern.test(p) && paths[p].post);
    if (path) view.actions[label] = path;
  }
  if (me.agent && paths["/api/quality/my-scores"]) loadScores();
  if (me.agent && paths["/api/supervision/sessions"]) {
    loadSupervision();
    setInterval(loadSupervision, 3000);
  }
} catch (_) { /* no document: every action stays disabled */ }
render();
feed((msg) => {
  if (msg.topic === "queues") view.queues = msg.data;
  else if (msg.topic === "calls") view.calls = msg.data;
  else return;
  render();
});
