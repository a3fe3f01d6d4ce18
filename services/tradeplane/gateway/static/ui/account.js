// The account page: sign-up and email verification, then (signed in) the profile, 2FA set
// up with a QR code and recovery codes, API keys (permissions, IP list; revoke), the login
// history and "log out everywhere". All through the public user endpoints.
import { $, connection, h, header, notice, time } from "./common.js";
import { qrSvg } from "./qr.js";
import { postJson, session } from "./session.js";

function table(cols, rows, empty) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
}

async function signUp(ev) {
  ev.preventDefault();
  const msg = $("#su-msg");
  msg.className = "";
  try {
    await postJson("/api/v1/auth/signup", { email: $("#su-email").value.trim(), password: $("#su-password").value });
    $("#su-password").value = "";
    msg.textContent = "Check your email: paste the token it holds below to verify the address.";
    $("#ve-token").focus();
  } catch (e) {
    msg.className = "error";
    msg.textContent = e.message;
  }
}

async function verify(ev) {
  ev.preventDefault();
  const msg = $("#ve-msg");
  msg.className = "";
  try {
    await postJson("/api/v1/auth/verify-email", { token: $("#ve-token").value.trim() });
    $("#ve-token").value = "";
    msg.textContent = "Email verified: you can sign in now.";
  } catch (e) {
    msg.className = "error";
    msg.textContent = e.message;
  }
}

let me = null;

async function loadProfile() {
  me = await session.user("GET", "/api/v1/user/me");
  $("#profile").replaceChildren(table(["Email", "Account", "Verified", "2FA", "Frozen"], [h("tr", {},
    h("td", {}, me.email), h("td", {}, me.account), h("td", {}, me.emailVerified ? "yes" : "no"),
    h("td", { id: "tf-state" }, me.twoFactor ? "on" : "off"), h("td", {}, me.frozen ? "yes" : "no"))], ""));
  render2fa();
}

function render2fa() {
  const body = $("#tf-body");
  if (me.twoFactor) {
    const code = h("input", { id: "tf-off-code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: "32" });
    body.replaceChildren(h("p", {}, "On: the code is asked at sign-in, for new API keys and for withdrawals."),
      h("div", { class: "inline" }, h("label", { class: "field" }, "Code", code),
        h("button", { type: "button", id: "tf-disable", onclick: () => act(async () => {
          await session.user("POST", "/api/v1/user/2fa/disable", { code: code.value.trim() });
          notice("Two-factor authentication is off", "ok");
          await loadProfile();
        }) }, "Turn off")));
    return;
  }
  body.replaceChildren(h("p", {}, "Off. Turn it on to protect sign-in, API keys and withdrawals."),
    h("button", { type: "button", id: "tf-setup", onclick: () => act(setup2fa) }, "Set up"));
}

async function setup2fa() {
  const s = await session.user("POST", "/api/v1/user/2fa/setup");
  const code = h("input", { id: "tf-code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: "32" });
  $("#tf-body").replaceChildren(
    h("p", {}, "Scan this with your authenticator app, then enter the code it shows."),
    h("div", { class: "inline" }, h("span", { class: "qr" }, qrSvg(s.otpauthUri)),
      h("div", {}, h("p", { class: "muted" }, "Or enter the secret:"), h("p", { class: "address", id: "tf-secret" }, s.secret))),
    h("div", { class: "inline" }, h("label", { class: "field" }, "Code", code),
      h("button", { type: "button", class: "primary", id: "tf-enable", onclick: () => act(async () => {
        const done = await session.user("POST", "/api/v1/user/2fa/enable", { code: code.value.trim() });
        me.twoFactor = true;
        $("#tf-state").textContent = "on";
        $("#tf-body").replaceChildren(
          h("p", {}, "Two-factor authentication is on. Keep these recovery codes somewhere safe: each works once, and they are shown only now."),
          h("ol", { id: "recovery-codes", class: "address" }, done.recoveryCodes.map((c) => h("li", {}, c))),
          h("button", { type: "button", onclick: () => render2fa() }, "I have saved them"));
      }) }, "Turn on")));
  code.focus();
}

async function loadKeys() {
  const keys = await session.user("GET", "/api/v1/user/api-keys");
  $("#keys").replaceChildren(table(["Key", "Label", "Type", "Permissions", "IP allow list", "Expires", ""],
    keys.map((k) => h("tr", { dataset: { apiKey: k.apiKey } },
      h("td", { class: "address" }, `${k.apiKey.slice(0, 12)}…`), h("td", {}, k.label || ""),
      h("td", {}, k.keyType), h("td", {}, (k.permissions || []).join(", ")),
      h("td", {}, (k.ipAllowList || []).join(", ") || "any"),
      h("td", {}, k.expiresAt ? time(k.expiresAt, true) : "never"),
      h("td", {}, k.apiKey === session.apiKey ? h("span", { class: "badge" }, "this browser")
        : h("button", { type: "button", class: "revoke", onclick: () => act(async () => {
          await session.user("DELETE", `/api/v1/user/api-keys/${encodeURIComponent(k.apiKey)}`);
          notice("Key revoked", "ok");
          await loadKeys();
        }) }, "Revoke")))),
    "No API keys."));
}

async function createKey(ev) {
  ev.preventDefault();
  await act(async () => {
    const perms = [...document.querySelectorAll("input[name=perm]:checked")].map((i) => i.value);
    const ips = $("#key-ips").value.split(",").map((s) => s.trim()).filter(Boolean);
    const k = await session.user("POST", "/api/v1/user/api-keys", {
      label: $("#key-label").value.trim(), permissions: perms, ipAllowList: ips,
      totpCode: $("#key-code").value.trim() || null });
    $("#key-code").value = "";
    $("#key-secret").replaceChildren(h("div", { class: "notice ok" },
      h("p", {}, "Your new key. The secret is shown this once: copy it now."),
      h("p", { class: "address" }, "API key: ", h("b", { id: "new-key" }, k.apiKey)),
      h("p", { class: "address" }, "Secret: ", h("b", { id: "new-secret" }, k.secretKey || "(none: Ed25519)"))));
    await loadKeys();
  });
}

async function loadLogins() {
  const rows = await session.user("GET", "/api/v1/user/login-history?limit=50");
  $("#logins").replaceChildren(table(["Time", "Address", "Browser", "Outcome"],
    rows.map((r) => h("tr", {}, h("td", {}, time(r.time ?? r.timeMs ?? r.at, true)), h("td", {}, r.ip),
      h("td", { class: "muted" }, (r.userAgent || "").slice(0, 80)),
      h("td", { class: r.success ? "up" : "down" }, r.success ? "ok" : r.reason || "refused"))),
    "No logins yet."));
}

async function act(fn) {
  try { await fn(); } catch (e) { notice(e.message, "error"); }
}

async function refresh() {
  const signedIn = session.signedIn;
  for (const id of ["#sec-profile", "#sec-2fa", "#sec-keys", "#sec-history"]) $(id).hidden = !signedIn;
  for (const id of ["#sec-signup", "#sec-verify"]) $(id).hidden = signedIn;
  connection("account", "live");
  if (!signedIn) return;
  await act(async () => { await loadProfile(); await Promise.all([loadKeys(), loadLogins()]); });
}

header("account");
$("#su-form").addEventListener("submit", signUp);
$("#ve-form").addEventListener("submit", verify);
$("#key-form").addEventListener("submit", createKey);
$("#logout-all").addEventListener("click", () => act(async () => {
  await session.signOutEverywhere();
  notice("Every session has ended", "ok");
}));
session.onChange(refresh);
session.restore().catch((e) => notice(e.message, "error"));
