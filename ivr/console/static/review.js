// Quality review (质检): a day's sample of recorded calls in the queues I review (draw it
// if it is not drawn yet), one call's recording (seek, speed), its events on a timeline
// and the scoring form (zh/en labels; each item 0..its maximum). The API checks every
// score against the form again (off the form: off_form_score) and audits each download.
import { api, clock, el, notice, onLanguage, start } from "./console.js";
import { lang, t } from "./i18n.js";

const view = { day: today(), form: [], reviews: [], current: null, speed: "1" };
const SPEEDS = ["0.75", "1", "1.25", "1.5", "2"];

function today() {
  // the hotline's day (Asia/Shanghai), as the server samples it
  return new Date(Date.now() + 8 * 3600 * 1000).toISOString().slice(0, 10);
}

function label(item) { return lang() === "zh" ? item.zh : item.en; }

function reasonText(r) { return t(`reason_${r}`); }

async function load() {
  const data = await api("GET", `/api/quality/reviews?day=${encodeURIComponent(view.day)}`);
  view.reviews = data.reviews;
  render();
}

async function draw() {
  try {
    const data = await api("POST", "/api/quality/sample", { day: view.day });
    notice(`${t("sampled")}: ${data.reviews.length}`, "ok");
    await load();
  } catch (e) { notice(e.message, "error"); }
}

async function open(callId) {
  try {
    view.current = await api("GET", `/api/quality/reviews/${encodeURIComponent(callId)}`);
    render();
  } catch (e) { notice(e.message, "error"); }
}

async function submit(ev) {
  ev.preventDefault();
  const rv = view.current;
  const scores = {};
  for (const item of view.form) {
    const raw = document.getElementById(`score-${item.key}`).value.trim();
    scores[item.key] = raw === "" || !/^-?\d+$/.test(raw) ? raw : Number(raw);
  }
  const comment = document.getElementById("comment").value;
  try {
    const done = await api("POST", `/api/quality/reviews/${encodeURIComponent(rv.call_id)}/score`,
      { scores, comment });
    notice(`${t("scored")}: ${done.total}/100`, "ok");
    await open(rv.call_id);
    await load();
  } catch (e) { notice(e.message, "error"); }
}

function listSection() {
  const dayInput = el("input", { id: "day", type: "date", value: view.day,
    onchange: (e) => { view.day = e.target.value; load().catch((x) => notice(x.message, "error")); } });
  const rows = view.reviews.map((r) => el("tr", { "data-call": r.call_id, class: view.current && view.current.call_id === r.call_id ? "current" : null },
    el("td", {}, el("button", { type: "button", class: "link open", onclick: () => open(r.call_id) }, r.call_id)),
    el("td", {}, clock(r.started_at)), el("td", {}, r.queue || "—"), el("td", {}, r.agent || "—"),
    el("td", {}, r.reasons.map(reasonText).join(", ")),
    el("td", { class: `status status-${r.status}` }, t(`status_${r.status}`)),
    el("td", {}, r.total === null || r.total === undefined ? "—" : String(r.total))));
  return el("section", {},
    el("h2", {}, t("review_sample")),
    el("p", {}, el("label", { for: "day" }, t("day"), " "), dayInput, " ",
      el("button", { type: "button", id: "draw", onclick: draw }, t("draw_sample"))),
    view.reviews.length === 0 ? el("p", { class: "empty", id: "no-reviews" }, t("none")) :
      el("table", { id: "reviews" }, el("thead", {}, el("tr", {},
        el("th", {}, t("call")), el("th", {}, t("time")), el("th", {}, t("queue")), el("th", {}, t("agent")),
        el("th", {}, t("reasons")), el("th", {}, t("status")), el("th", {}, t("total")))),
      el("tbody", {}, rows)));
}

function detailSection() {
  const rv = view.current;
  if (!rv) return null;
  const src = `/api/quality/reviews/${encodeURIComponent(rv.call_id)}/recording`;
  const audio = rv.recordings.length ? el("audio", { id: "player", controls: true, preload: "metadata", src }) :
    el("p", { class: "empty" }, t("no_recording"));
  const speed = el("select", { id: "speed", onchange: (e) => {
    view.speed = e.target.value;
    const p = document.getElementById("player");
    if (p) p.playbackRate = Number(view.speed);
  } }, SPEEDS.map((s) => el("option", { value: s, selected: s === view.speed }, `${s}×`)));
  const timeline = el("table", { id: "timeline" }, el("tbody", {}, rv.timeline.map((e) => el("tr", { "data-type": e.type },
    el("td", {}, e.seq), el("td", {}, clock(e.ts)), el("td", {}, e.type),
    el("td", { class: "hint" }, Object.entries(e.data || {}).filter(([, v]) => v !== null && v !== "")
      .slice(0, 6).map(([k, v]) => `${k}=${v}`).join(" "))))));
  const readonly = rv.status === "scored";
  const items = view.form.map((item) => el("p", {},
    el("label", { for: `score-${item.key}` }, `${label(item)} (0–${item.max}) `),
    el("input", { id: `score-${item.key}`, name: item.key, inputmode: "numeric", size: 4,
      value: rv.scores && rv.scores[item.key] !== undefined ? String(rv.scores[item.key]) : "",
      disabled: readonly })));
  const form = el("form", { id: "score-form", onsubmit: submit },
    el("h2", {}, t("score_form")), ...items,
    el("p", {}, el("label", { for: "comment" }, t("comment"), " "),
      el("textarea", { id: "comment", rows: 2, cols: 50, disabled: readonly }, rv.comment || "")),
    el("button", { type: "submit", id: "submit-score", disabled: readonly }, t("submit_score")),
    rv.total !== null && rv.total !== undefined ? el("p", { id: "review-total" }, `${t("total")}: ${rv.total}/100 · ${rv.reviewer || ""}`) : null);
  return el("section", { id: "review", "data-call": rv.call_id },
    el("h2", {}, `${t("call")} ${rv.call_id}`),
    el("dl", {}, el("dt", {}, t("queue")), el("dd", {}, rv.queue || "—"),
      el("dt", {}, t("agent")), el("dd", {}, rv.agent || "—"),
      el("dt", {}, t("caller")), el("dd", {}, rv.caller || "—"),
      el("dt", {}, t("reasons")), el("dd", {}, rv.reasons.map(reasonText).join(", ")),
      el("dt", {}, t("status")), el("dd", { id: "review-status" }, t(`status_${rv.status}`)),
      rv.appeal ? el("dt", {}, t("appeal")) : null, rv.appeal ? el("dd", {}, rv.appeal.reason) : null),
    el("h2", {}, t("recording")), audio, el("p", {}, el("label", { for: "speed" }, t("speed"), " "), speed),
    el("h2", {}, t("timeline")), timeline, form);
}

function render() {
  const main = document.getElementById("main");
  main.replaceChildren(listSection(), detailSection() || "");
  const p = document.getElementById("player");
  if (p) p.playbackRate = Number(view.speed);
}

async function main() {
  await start("review");
  const form = await api("GET", "/api/quality/form");
  view.form = form.items;
  onLanguage(render);
  await load();
}

main().catch((e) => notice(e.message, "error"));
