// Dialplan editor (supervisors read and validate; admins publish and roll back): the
// working definition's YAML files, validation with every problem at its line and
// column, the diff of the edit, publish, the versions (their diffs, roll back) and the
// audit trail.
import { api, can, el, notice, onLanguage, start } from "./console.js";
import { t } from "./i18n.js";

const view = { original: {}, files: {}, name: null, problems: null, valid: null, diff: null,
  versions: [], current: null, audit: [], apiAudit: [], shownDiff: null };

// a line diff (longest common subsequence; the files are a few hundred lines)
export function lineDiff(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { i++; j++; }
    else if (j < m && (i === n || L[i][j + 1] >= L[i + 1][j])) { out.push(`+${j + 1}: ${y[j]}`); j++; }
    else { out.push(`-${i + 1}: ${x[i]}`); i++; }
  }
  return out;
}

function changed() {
  return Object.fromEntries(Object.entries(view.files).filter(([k, v]) => view.original[k] !== v));
}

function editor() {
  return document.getElementById("editor");
}

function keep() {
  const ed = editor();
  if (ed && view.name) view.files[view.name] = ed.value;
}

function goTo(file, line, column) {
  keep();
  view.name = file in view.files ? file : view.name;
  render();
  const ed = editor();
  const lines = ed.value.split("\n");
  let pos = 0;
  for (let k = 0; k < Math.min(line - 1, lines.length); k++) pos += lines[k].length + 1;
  pos += Math.max(0, column - 1);
  ed.focus();
  ed.setSelectionRange(pos, pos);
}

async function validate() {
  keep();
  const res = await api("POST", "/api/dialplans/validate", { files: view.files });
  view.valid = res.valid;
  view.problems = res.problems;
  render();
  notice(res.valid ? t("valid") : `${t("invalid")} (${res.problems.length})`, res.valid ? "ok" : "error");
}

function showDiff() {
  keep();
  const out = [];
  for (const [name, text] of Object.entries(changed())) {
    out.push(`--- ${name}`, ...lineDiff(view.original[name] ?? "", text));
  }
  view.diff = out.length ? out.join("\n") : t("no_changes");
  render();
}

async function publish() {
  keep();
  if (!confirm(t("confirm_publish"))) return;
  try {
    const res = await api("POST", "/api/dialplans/publish", { files: changed() });
    notice(`${t("published")}: ${res.version} (${res.id})`, "ok");
    await load();
  } catch (e) {
    notice(e.message, "error");
  }
}

async function rollback(id) {
  if (!confirm(t("confirm_rollback"))) return;
  try {
    const res = await api("POST", "/api/dialplans/rollback", { version_id: id });
    notice(`${t("published")}: ${res.version} (${res.id})`, "ok");
    await load();
  } catch (e) {
    notice(e.message, "error");
  }
}

async function versionDiff(id) {
  const res = await api("GET", `/api/dialplans/versions/${encodeURIComponent(id)}/diff`);
  view.shownDiff = res.diff || t("no_changes");
  render();
}

function render() {
  const main = document.getElementById("main");
  const names = Object.keys(view.files).sort();
  const tabs = el("nav", { class: "tabs", id: "files" }, names.map((n) => el("button", {
    type: "button", class: n === view.name ? "active" : null, "data-file": n,
    onclick: () => { keep(); view.name = n; render(); } }, n + (view.original[n] !== view.files[n] ? " *" : ""))));
  const ed = el("textarea", { id: "editor", spellcheck: "false", rows: 28 });
  ed.value = view.name ? view.files[view.name] : "";
  const buttons = el("p", { class: "actions" },
    el("button", { id: "validate", type: "button", onclick: () => validate().catch((e) => notice(e.message, "error")) }, t("validate")), " ",
    el("button", { id: "diff", type: "button", onclick: showDiff }, t("diff")), " ",
    el("button", { id: "publish", type: "button", disabled: !can("dialplans.publish"), onclick: publish,
      title: can("dialplans.publish") ? null : t("read_only") }, t("publish")), " ",
    el("button", { id: "reload", type: "button", onclick: () => load() }, t("reload")),
    can("dialplans.publish") ? null : el("span", { class: "hint" }, " ", t("read_only")));
  const problems = view.problems === null ? null : el("section", { id: "problems" },
    el("h2", {}, t("problems"), view.valid ? ` — ${t("valid")}` : ` — ${t("invalid")}`),
    el("ul", {}, view.problems.map((p) => el("li", { class: `problem ${p.severity}`, "data-line": p.line, "data-column": p.column },
      el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); goTo(p.file, p.line, p.column); } },
        `${p.file}:${p.line}:${p.column}`), ` ${p.severity}: ${p.message}`))));
  const diff = view.diff === null ? null : el("section", {}, el("h2", {}, t("diff")), el("pre", { id: "diff-out" }, view.diff));

  const current = view.current ? `${view.current.version} (${view.current.id})` : "—";
  const versions = el("section", { id: "versions" }, el("h2", {}, t("versions")),
    el("p", {}, `${t("current_version")}: `, el("b", { id: "current-version" }, current)),
    el("table", {}, el("thead", {}, el("tr", {}, ...["versions", "when", "who", "status"].map((k) => el("th", {}, t(k))), el("th", {}))),
      el("tbody", {}, [...view.versions].reverse().map((v) => el("tr", { "data-version": v.id, class: v.current ? "current" : null },
        el("td", {}, `${v.version} (${v.id})`), el("td", {}, v.when), el("td", {}, v.who), el("td", {}, v.status),
        el("td", {}, el("button", { type: "button", class: "link", onclick: () => versionDiff(v.id).catch((e) => notice(e.message, "error")) }, t("diff")),
          can("dialplans.publish") && !v.current ? el("button", { type: "button", class: "link rollback", onclick: () => rollback(v.id) }, t("rollback")) : null))))),
    view.shownDiff === null ? null : el("pre", { id: "version-diff" }, view.shownDiff));

  const audit = el("section", { id: "audit" }, el("h2", {}, t("audit")),
    el("table", {}, el("thead", {}, el("tr", {}, ...["when", "who", "versions", "result"].map((k) => el("th", {}, t(k))))),
      el("tbody", {}, view.audit.slice(-20).reverse().map((r) => el("tr", {},
        el("td", {}, String(r.when ?? "")), el("td", {}, String(r.who ?? "")),
        el("td", {}, `${r.version ?? ""} ${(r.files_changed || []).join(", ")}`),
        el("td", { class: "status" }, `${r.status ?? ""} ${r.message ?? ""}`))))));

  main.replaceChildren(...[el("section", { id: "edit" }, el("h2", {}, t("files")), tabs, ed, buttons),
    problems, diff, versions, audit].filter((node) => node !== null));
}

async function load() {
  const working = await api("GET", "/api/dialplans/working");
  view.original = { ...working.files };
  view.files = { ...working.files };
  if (!view.name || !(view.name in view.files)) view.name = Object.keys(view.files).sort()[0] || null;
  view.problems = null; view.diff = null; view.shownDiff = null;
  view.versions = (await api("GET", "/api/dialplans/versions")).versions;
  try { view.current = await api("GET", "/api/dialplans/current"); } catch (_) { view.current = null; }
  view.audit = (await api("GET", "/api/dialplans/audit")).records;
  render();
}

await start("dialplans");
onLanguage(() => { keep(); render(); });
await load();
