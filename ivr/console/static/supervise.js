// Supervise (班长监听): the live agent calls in the queues I supervise; join one from my
// phone listening, whispering to the agent or barging in; switch mode; leave (the call
// goes on). The session follows what Asterisk reports (ringing → active → ended); the API
// checks everything again before anything is sent (docs/supervision.md).
import { api, clock, el, feed, notice, onLanguage, start } from "./console.js";
import { t } from "./i18n.js";

const MODES = ["listen", "whisper", "barge"];
const view = { calls: [], sessions: [], phone: "" };

function mine() {
  const me = view.me;
  return view.sessions.find((s) => s.supervisor === me.name && (s.status === "ringing" || s.status === "active")) || null;
}

async function refresh() {
  try {
    view.calls = (await api("GET", "/api/supervision/calls")).calls;
    view.sessions = (await api("GET", "/api/supervision/sessions")).sessions;
  } catch (e) { notice(e.message, "error"); }
  render();
}

async function act(fn) {
  try { await fn(); } catch (e) { notice(e.message, "error"); }
  await refresh();
}

function join(call, mode) {
  const body = { call_id: call.call_id, mode };
  if (view.phone) body.phone = view.phone;
  return act(() => api("POST", "/api/supervision/sessions", body));
}

function render() {
  const main = document.getElementById("main");
  const current = mine();
  const phone = el("p", {}, el("label", { for: "phone" }, t("my_phone"), " "),
    el("input", { id: "phone", value: view.phone, placeholder: t("phone_default"),
      onchange: (e) => { view.phone = e.target.value.trim(); } }));
  const rows = view.calls.map((c) => el("tr", { "data-call": c.call_id },
    el("td", {}, c.call_id), el("td", {}, clock(c.started_at)), el("td", {}, c.queue || "—"),
    el("td", {}, c.agent || "—"), el("td", {}, c.caller || "—"),
    el("td", {}, MODES.map((m) => el("button", { type: "button", class: `join join-${m}`, disabled: !!current,
      onclick: () => join(c, m) }, t(`mode_${m}`))).flatMap((b) => [b, " "]))));
  const calls = el("section", {}, el("h2", {}, t("supervisable_calls")),
    rows.length === 0 ? el("p", { class: "empty", id: "no-calls" }, t("none")) :
      el("table", { id: "sup-calls" }, el("thead", {}, el("tr", {}, el("th", {}, t("call")), el("th", {}, t("since")),
        el("th", {}, t("queue")), el("th", {}, t("agent")), el("th", {}, t("caller")), el("th", {}, t("join")))),
      el("tbody", {}, rows)));
  let session = "";
  if (current) {
    session = el("section", { id: "session", "data-status": current.status, "data-mode": current.mode },
      el("h2", {}, t("my_session")),
      el("dl", {}, el("dt", {}, t("call")), el("dd", {}, current.call_id),
        el("dt", {}, t("agent")), el("dd", {}, current.agent || "—"),
        el("dt", {}, t("my_phone")), el("dd", {}, current.phone),
        el("dt", {}, t("status")), el("dd", { id: "session-status" }, t(`session_${current.status}`)),
        el("dt", {}, t("mode")), el("dd", { id: "session-mode" }, t(`mode_${current.mode}`))),
      el("p", {}, MODES.map((m) => el("button", { type: "button", id: `mode-${m}`,
        disabled: current.status !== "active" || current.mode === m,
        onclick: () => act(() => api("POST", `/api/supervision/sessions/${current.id}/mode`, { mode: m })) },
      t(`mode_${m}`))).flatMap((b) => [b, " "]),
      el("button", { type: "button", id: "leave",
        onclick: () => act(() => api("POST", `/api/supervision/sessions/${current.id}/leave`, {})) }, t("leave"))));
  }
  const last = view.sessions.filter((s) => s.supervisor === view.me.name && !(s.status === "ringing" || s.status === "active"))
    .sort((a, b) => (b.ended_at || 0) - (a.ended_at || 0))[0];
  const ended = !current && last ? el("p", { id: "last-session", "data-reason": last.reason },
    `${t("last_session")}: ${last.call_id} · ${t(`session_${last.status}`)} (${last.reason})`) : "";
  main.replaceChildren(phone, session, ended, calls);
}

async function main() {
  view.me = await start("supervise");
  onLanguage(render);
  await refresh();
  setInterval(refresh, 2000);
  feed((msg) => { if (msg.topic === "calls") refresh(); });
}

main().catch((e) => notice(e.message, "error"));
