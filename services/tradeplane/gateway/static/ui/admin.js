// The admin console: the health view (live), withdrawal approvals, escrowed deals (resolve disputes), pairs (halt / resume / cancel-only, fees), the
// kill switch, users (look up, freeze) and the audit log. Roles are the API's to enforce:
// a section whose read answers 403 is hidden, an action it refuses says why.
import { $, connection, h, header, notice, time, trimZeros } from "./common.js";
import { ApiError, get, postJson } from "./session.js";

let token = null; // in this page's memory only

const api = (method, path, body) => postJson(path, body, token, method);
async function read(path) {
  const resp = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  const doc = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, doc && doc.code, (doc && doc.msg) || `HTTP ${resp.status}`);
  return doc;
}

function table(cols, rows, empty) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
}

/** Ask for a typed confirmation word; resolves true when given. */
function confirmTyped(text, word) {
  const dlg = $("#adm-confirm");
  $("#adm-confirm-text").textContent = text;
  $("#adm-confirm-word").textContent = word;
  $("#adm-confirm-input").value = "";
  dlg.returnValue = "";
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener("close",
    () => resolve(dlg.returnValue === "ok" && $("#adm-confirm-input").value.trim() === word), { once: true }));
}

async function act(fn, done) {
  try { await fn(); if (done) await done(); } catch (e) { notice(e.message, "error"); }
}

/** Run a section's loader; hide the section when the role may not read it. */
async function section(id, load) {
  try {
    await load();
    $(id).hidden = false;
    return true;
  } catch (e) {
    $(id).hidden = true;
    if (e.status !== 403) notice(`${id.slice(5)}: ${e.message}`, "error");
    return false;
  }
}

// --------------------------------------------------------------------------- health
const num = (v) => (v === null || v === undefined ? "unknown" : String(v));
/** A lag cell: zero is quiet, anything else stands out, unknown says so. */
const lag = (v) => h("td", { class: v === null ? "health-unknown" : v > 0 ? "health-bad" : "health-ok" }, num(v));

async function loadHealth() {
  const doc = await read("/admin/health");
  const ledger = $("#health-ledger");
  ledger.textContent = doc.ledger.status + (doc.ledger.checkedAt ? ` (checked ${time(doc.ledger.checkedAt, true)})` : "");
  ledger.className = { ok: "health-ok", violated: "health-bad" }[doc.ledger.status] || "health-unknown";
  if (doc.ledger.problems.length) ledger.title = doc.ledger.problems.join("\n");
  const md = doc.marketData;
  $("#health-md").textContent = md.lag === null ? "unknown"
    : `${md.lag} event batch(es) (at ${num(md.position)} of ${num(md.eventsSequence)})`;
  $("#health-md").className = md.lag === null ? "health-unknown" : md.lag > 0 ? "health-bad" : "health-ok";
  $("#health-engines").replaceChildren(table(
    ["Symbol", "Commands", "Engine sequence", "Settled", "Engine backlog", "Settlement lag"],
    doc.engines.map((e) => h("tr", { dataset: { symbol: e.symbol } }, h("td", {}, e.symbol),
      h("td", {}, num(e.commandSequence)), h("td", { class: "engine-seq" }, num(e.engineSequence)),
      h("td", {}, num(e.settledSequence)), lag(e.engineBacklog), lag(e.settlementLag))),
    "No pairs."));
  $("#health-streams").replaceChildren(table(["Stream", "Messages", "Bytes", "First", "Last", "Consumers"],
    doc.streams.map((s) => h("tr", {}, h("td", {}, s.name), h("td", {}, s.messages), h("td", {}, s.bytes),
      h("td", {}, s.firstSequence), h("td", {}, s.lastSequence), h("td", {}, s.consumers))),
    "No streams."));
  $("#health-errors").replaceChildren(...doc.errors.map((e) => h("li", {}, e)));
  $("#health-time").textContent = `updated ${time(doc.time)}`;
}

// --------------------------------------------------------------------------- withdrawals
async function loadWithdrawals() {
  const status = $("#wd-status").value;
  const rows = await read(`/admin/withdrawals${status ? `?status=${status}` : ""}`);
  $("#wd-queue").replaceChildren(table(["Id", "Time", "Account", "Coin", "Amount", "Fee", "Address", "Status", ""],
    rows.map((w) => h("tr", { dataset: { withdrawalId: w.id } }, h("td", {}, w.id), h("td", {}, time(w.createdMs, true)),
      h("td", {}, w.account), h("td", {}, w.asset), h("td", {}, trimZeros(w.amount)), h("td", {}, trimZeros(w.fee)),
      h("td", { class: "address" }, w.address), h("td", {}, w.status),
      h("td", { class: "actions" }, ["PENDING"].includes(w.status) ? [
        h("button", { type: "button", class: "approve", onclick: () => act(() => api("POST", `/admin/withdrawals/${w.id}/approve`), loadWithdrawals) }, "Approve"),
        h("button", { type: "button", class: "reject", onclick: () => act(() => api("POST", `/admin/withdrawals/${w.id}/reject`, { reason: "rejected in the console" }), loadWithdrawals) }, "Reject"),
      ] : []))),
    "Nothing waiting."));
}

// --------------------------------------------------------------------------- escrowed deals
/** Resolve a dispute with the reason typed above (it goes to the audit log and the deal's history). */
async function resolveDeal(d, outcome) {
  const reason = $("#escrow-reason").value.trim();
  if (!reason) { notice("Give a reason for the resolution first.", "error"); return; }
  await act(() => api("POST", `/admin/escrow/deals/${d.dealId}/resolve`, { outcome, reason }), loadEscrow);
}

async function loadEscrow() {
  const state = $("#escrow-state").value;
  const rows = await read(`/admin/escrow/deals?limit=1000${state ? `&state=${state}` : ""}`);
  $("#escrow-deals").replaceChildren(table(["Id", "Created", "Seller", "Buyer", "Asset", "Amount", "Price", "State", "Deadline", ""],
    rows.map((d) => h("tr", { dataset: { dealId: d.dealId } }, h("td", {}, d.dealId), h("td", {}, time(d.createTime, true)),
      h("td", {}, d.seller), h("td", {}, d.buyer), h("td", {}, d.asset), h("td", {}, trimZeros(d.amount)),
      h("td", {}, `${trimZeros(d.price)} ${d.priceAsset}`), h("td", { class: "deal-state" }, d.state),
      h("td", {}, d.deadline ? time(d.deadline, true) : "–"),
      h("td", { class: "actions" }, d.state === "DISPUTED" ? [
        h("button", { type: "button", class: "release", onclick: () => resolveDeal(d, "release") }, "Release to buyer"),
        h("button", { type: "button", class: "refund", onclick: () => resolveDeal(d, "refund") }, "Refund seller"),
      ] : []))),
    state === "DISPUTED" ? "No open disputes." : "No deals."));
}

// --------------------------------------------------------------------------- kill switch
async function loadKill() {
  const s = await read("/admin/kill-switch");
  const on = Boolean(s.on);
  $("#kill-state").textContent = on ? `ON — trading halted${s.reason ? ` (${s.reason})` : ""}` : "off";
  $("#kill-state").className = on ? "down" : "up";
}

// --------------------------------------------------------------------------- pairs
async function loadPairs() {
  await read("/admin/kill-switch"); // the pair controls need an admin; 403 hides them
  const info = await get("/api/v3/exchangeInfo");
  const fees = (p) => {
    const maker = h("input", { class: "fee", inputmode: "numeric", "aria-label": `${p.symbol} maker fee (ppm)`, placeholder: "maker ppm", size: "9" });
    const taker = h("input", { class: "fee", inputmode: "numeric", "aria-label": `${p.symbol} taker fee (ppm)`, placeholder: "taker ppm", size: "9" });
    return h("span", { class: "inline" }, maker, taker, h("button", { type: "button", onclick: () => act(
      () => api("PUT", `/admin/pairs/${p.symbol}/fees`, { makerFeePpm: Number(maker.value), takerFeePpm: Number(taker.value) }),
      () => notice(`${p.symbol} fees set`, "ok")) }, "Set fees"));
  };
  const trading = (p, state, label) => h("button", { type: "button", dataset: { state },
    onclick: () => act(() => api("PUT", `/admin/pairs/${p.symbol}/trading`, { trading: state }), loadPairs) }, label);
  $("#pairs").replaceChildren(table(["Pair", "Status", "Trading", "Fees"],
    info.symbols.map((p) => h("tr", { dataset: { symbol: p.symbol } }, h("td", {}, `${p.baseAsset}/${p.quoteAsset}`),
      h("td", { class: "status" }, p.status),
      h("td", { class: "actions" }, trading(p, "halted", "Halt"), trading(p, "enabled", "Resume"),
        trading(p, "cancel-only", "Cancel-only")),
      h("td", {}, fees(p)))), "No pairs."));
}

// --------------------------------------------------------------------------- users
async function findUser(ev) {
  if (ev) ev.preventDefault();
  const q = $("#user-q").value.trim();
  if (!q) return;
  try {
    const doc = /^\d+$/.test(q) ? await read(`/admin/users/${q}`)
      : await read(`/admin/users?email=${encodeURIComponent(q)}`);
    const reason = h("input", { id: "freeze-reason", placeholder: "reason", "aria-label": "Freeze reason" });
    $("#user-doc").replaceChildren(
      table(["Account", "Email", "Verified", "2FA", "Frozen"], [h("tr", {},
        h("td", {}, doc.account), h("td", {}, doc.email || doc.name), h("td", {}, doc.emailVerified ? "yes" : "no"),
        h("td", {}, doc.twoFactor ? "on" : "off"), h("td", { class: doc.frozen ? "down" : "" }, doc.frozen ? `yes: ${doc.frozenReason}` : "no"))], ""),
      credit(doc.account),
      h("div", { class: "inline" }, doc.frozen
        ? h("button", { type: "button", onclick: () => act(() => api("POST", `/admin/users/${doc.account}/unfreeze`), () => findUser()) }, "Unfreeze")
        : [reason, h("button", { type: "button", class: "primary sell", onclick: () => act(
            () => api("POST", `/admin/users/${doc.account}/freeze`, { reason: reason.value.trim() || "frozen in the console" }), () => findUser()) }, "Freeze")]));
  } catch (e) {
    $("#user-doc").replaceChildren(h("p", { class: "error" }, e.message));
  }
}

/** Credit funds from the outside world (idempotent by its reference). */
function credit(account) {
  const asset = h("input", { id: "credit-asset", size: "6", placeholder: "USDT", "aria-label": "Asset to credit" });
  const amount = h("input", { id: "credit-amount", inputmode: "decimal", size: "10", placeholder: "amount", "aria-label": "Amount to credit" });
  return h("form", { class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const ref = `console:${account}:${Date.now()}`;
    act(() => api("POST", "/admin/credit", { account, asset: asset.value.trim().toUpperCase(),
                                           amount: amount.value.trim(), ref }),
        () => notice(`Credited ${amount.value.trim()} ${asset.value.trim().toUpperCase()} to ${account}`, "ok"));
  } }, asset, amount, h("button", { type: "submit", id: "credit-submit" }, "Credit"));
}

// --------------------------------------------------------------------------- audit
async function loadAudit(ev) {
  if (ev) ev.preventDefault();
  const q = new URLSearchParams();
  for (const [k, id] of [["action", "#audit-action"], ["actor", "#audit-actor"], ["target", "#audit-target"], ["fromId", "#audit-from"]]) {
    if ($(id).value.trim()) q.set(k, $(id).value.trim());
  }
  q.set("limit", "200");
  const rows = await read(`/admin/audit?${q}`);
  $("#audit").replaceChildren(table(["Id", "Time", "Actor", "Role", "Action", "Target", "IP"],
    rows.reverse().map((r) => h("tr", {}, h("td", {}, r.id), h("td", {}, time(r.time, true)),
      h("td", {}, r.actor), h("td", {}, r.role), h("td", {}, r.action), h("td", {}, r.target), h("td", {}, r.ip || ""))),
    "No entries."));
}

// --------------------------------------------------------------------------- console
let poller;
let healthPoller;

async function open(ev) {
  ev.preventDefault();
  token = $("#adm-token").value.trim();
  if (!token) return;
  try {
    await read("/admin/audit?limit=1").catch((e) => { if (e.status === 401) throw e; });
  } catch (e) {
    token = null;
    notice(e.message, "error");
    return;
  }
  $("#adm-token").value = "";
  $("#adm-token").disabled = true;
  $("#adm-signin").hidden = true;
  $("#adm-signout").hidden = false;
  $("#adm-who").textContent = "console open";
  await refresh();
  poller = setInterval(() => {
    section("#sec-withdrawals", loadWithdrawals);
    section("#sec-escrow", loadEscrow);
  }, 5000);
  // The health view is live: the operator watches it move.
  healthPoller = setInterval(() => section("#sec-health", loadHealth), 2000);
}

async function refresh() {
  const shown = await Promise.all([
    section("#sec-withdrawals", loadWithdrawals), section("#sec-escrow", loadEscrow),
    section("#sec-kill", loadKill),
    section("#sec-pairs", loadPairs), section("#sec-audit", loadAudit),
    section("#sec-health", loadHealth),
  ]);
  $("#sec-users").hidden = !shown.some(Boolean);
}

function close() {
  token = null;
  clearInterval(poller);
  clearInterval(healthPoller);
  for (const id of ["#sec-health", "#sec-withdrawals", "#sec-escrow", "#sec-kill", "#sec-pairs", "#sec-audit", "#sec-users"]) $(id).hidden = true;
  $("#adm-token").disabled = false;
  $("#adm-signin").hidden = false;
  $("#adm-signout").hidden = true;
  $("#adm-who").textContent = "";
}

header("admin");
connection("admin", "live");
$("#adm-login").addEventListener("submit", open);
$("#adm-signout").addEventListener("click", close);
$("#wd-status").addEventListener("change", () => act(loadWithdrawals));
$("#escrow-state").addEventListener("change", () => act(loadEscrow));
$("#user-find").addEventListener("submit", findUser);
$("#audit-filter").addEventListener("submit", (ev) => act(() => loadAudit(ev)));
$("#kill-on").addEventListener("click", async () => {
  if (await confirmTyped("Every pair stops trading at once, on every gateway and engine.", "HALT")) {
    await act(() => api("POST", "/admin/kill-switch", { reason: $("#kill-reason").value.trim() }), loadKill);
  }
});
$("#kill-off").addEventListener("click", async () => {
  if (await confirmTyped("Every pair goes back to the state it had before the switch.", "RESUME")) {
    await act(() => api("DELETE", "/admin/kill-switch"), loadKill);
  }
});
