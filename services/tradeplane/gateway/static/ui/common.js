// What every page shares: the header (navigation, connection state, theme, sign-in),
// a tiny element builder, number formatting and notices.
import { session } from "./session.js";

/** Build an element: h("td", {class: "num", onclick: fn}, "text", child...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Trim a decimal string's trailing zeros ("0.01000000" -> "0.01"). */
export function trimZeros(s) {
  s = String(s);
  return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

/** Format a number with `dp` decimals (for display only; orders send strings). */
export function fmt(x, dp = 2) {
  const n = Number(x);
  if (!Number.isFinite(n)) return "–";
  return n.toLocaleString("en-US", { minimumFractionDigits: dp, maximumFractionDigits: dp });
}

/** Decimals of a step like "0.01000000" (-> 2). */
export function decimalsOf(step) {
  const t = trimZeros(step);
  return t.includes(".") ? t.split(".")[1].length : 0;
}

/** `value` rounded down to a multiple of `step`, as a decimal string. */
export function toStep(value, step) {
  const dp = decimalsOf(step);
  const s = Number(step);
  if (!(s > 0) || !Number.isFinite(Number(value))) return "";
  const n = Math.floor(Number(value) / s + 1e-9) * s;
  return n.toFixed(dp);
}

export function time(ms, withDate = false) {
  const d = new Date(ms);
  const t = d.toLocaleTimeString("en-GB", { hour12: false });
  return withDate ? `${d.toISOString().slice(0, 10)} ${t}` : t;
}

/** A notice at the bottom right (role=status: screen readers hear it). */
export function notice(text, kind = "info") {
  let box = $("#notices");
  if (!box) {
    box = h("div", { id: "notices", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const item = h("div", { class: `notice ${kind}` }, text);
  box.append(item);
  while (box.children.length > 3) box.firstChild.remove(); // the latest three only
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

// --------------------------------------------------------------------------- theme
const THEME_KEY = "tradeplane-theme";

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  for (const fn of themeListeners) fn(theme);
}

const themeListeners = new Set();
export function onTheme(fn) { themeListeners.add(fn); }
export function theme() { return document.documentElement.dataset.theme; }

function initialTheme() {
  const saved = localStorage.getItem(THEME_KEY);
  if (saved === "dark" || saved === "light") return saved;
  return matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
}

// --------------------------------------------------------------------------- connection state
const states = new Map();
export function connection(name, state) {
  states.set(name, state);
  const el = $("#conn");
  if (!el) return;
  const all = [...states.values()];
  const overall = all.every((s) => s === "live") ? "live"
    : all.some((s) => s === "reconnecting") ? "reconnecting" : "connecting";
  el.dataset.state = overall;
  el.textContent = { live: "● Live", connecting: "○ Connecting", reconnecting: "◌ Reconnecting" }[overall];
  el.title = [...states.entries()].map(([n, s]) => `${n}: ${s}`).join("\n");
}

// --------------------------------------------------------------------------- header
function signInDialog() {
  const email = h("input", { id: "si-email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "si-password", type: "password", autocomplete: "current-password", required: true });
  const code = h("input", { id: "si-code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: "32" });
  const codeRow = h("label", { class: "field", hidden: true }, "Two-factor code", code);
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const dlg = h("dialog", { id: "signin", "aria-labelledby": "si-title" },
    h("form", { method: "dialog", onsubmit: async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      try {
        await session.signIn(email.value.trim(), password.value, code.value.trim());
        password.value = "";
        code.value = "";
        codeRow.hidden = true;
        dlg.close();
      } catch (err) {
        if (/Two-factor code required/.test(err.message)) {
          codeRow.hidden = false;
          code.focus();
          error.textContent = "Enter the code from your authenticator app.";
        } else {
          error.textContent = err.message;
        }
      } finally {
        submit.disabled = false;
      }
    } },
    h("h2", { id: "si-title" }, "Sign in"),
    h("label", { class: "field" }, "Email", email),
    h("label", { class: "field" }, "Password", password),
    codeRow, error,
    h("p", { class: "muted" }, "No account yet? ", h("a", { href: "/account" }, "Create one")),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => dlg.close() }, "Cancel"), submit)));
  return dlg;
}

/** Render the header into <header id="top">; `page` marks the current link. */
export function header(page) {
  const root = $("#top");
  document.documentElement.dataset.theme = initialTheme();
  const userBox = h("span", { id: "user" });
  const dlg = signInDialog();
  const themeBtn = h("button", { id: "theme", type: "button", "aria-label": "Toggle dark/light theme",
    onclick: () => {
      const next = theme() === "dark" ? "light" : "dark";
      localStorage.setItem(THEME_KEY, next);
      applyTheme(next);
    } }, "◐");
  const link = (href, text, name) => h("a", { href, "aria-current": page === name ? "page" : false }, text);
  root.append(
    h("a", { class: "brand", href: "/" }, "tradeplane"),
    h("nav", { "aria-label": "Pages" },
      link("/", "Trade", "trade"), link("/wallet", "Wallet", "wallet"),
      link("/portfolio", "Portfolio", "portfolio"),
      link("/account", "Account", "account"),
      link("/admin", "Admin", "admin"), h("a", { href: "/docs" }, "API")),
    h("span", { class: "spacer" }),
    h("span", { id: "conn", role: "status", "data-state": "connecting" }, "○ Connecting"),
    themeBtn, userBox, dlg);
  const render = () => {
    userBox.replaceChildren(session.signedIn
      ? h("span", {}, h("span", { class: "muted" }, session.email || ""), " ",
          h("button", { id: "signout", type: "button", onclick: () => session.signOut() }, "Sign out"))
      : h("button", { id: "signin-open", type: "button", class: "primary",
                      onclick: () => dlg.showModal() }, "Sign in"));
  };
  session.onChange(render);
  render();
  matchMedia("(prefers-color-scheme: light)").addEventListener("change", (e) => {
    if (!localStorage.getItem(THEME_KEY)) applyTheme(e.matches ? "light" : "dark");
  });
}

