// The login page: the token goes once in a POST body (never a URL); the server answers
// with an HttpOnly session cookie, and the page forgets the token.
import { applyI18n, lang, message, setLang, t } from "./i18n.js";

applyI18n();
const sw = document.getElementById("lang");
sw.textContent = t("lang_switch");
sw.onclick = () => { setLang(lang() === "zh" ? "en" : "zh"); sw.textContent = t("lang_switch"); };

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  const error = document.getElementById("error");
  error.textContent = "";
  const token = input.value.trim();
  input.value = "";
  try {
    const resp = await fetch("/api/session", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
    });
    const data = await resp.json();
    if (!resp.ok) {
      error.textContent = `${t("login_failed")}: ${message(data.message)}`;
      return;
    }
    location.replace(data.role === "agent" ? "/console/agent" : "/console/wallboard");
  } catch (e) {
    error.textContent = `${t("login_failed")}: ${e}`;
  }
});
