// The wallet page: balances with their value in USDT, deposit address with its QR code and
// the deposit history, withdrawals (with the 2FA code) and their status, live.
import { $, connection, fmt, h, header, notice, time, trimZeros } from "./common.js";
import { LiveSocket, perFrame } from "./net.js";
import { qrSvg } from "./qr.js";
import { get, session } from "./session.js";

const QUOTE = "USDT";
const WITHDRAW_STATUS = { 0: "Email sent", 1: "Cancelled", 2: "Awaiting approval", 3: "Rejected",
                          4: "Processing", 5: "Failed", 6: "Completed" };
const DEPOSIT_STATUS = { 0: "Pending", 1: "Credited", 6: "Credited", 7: "Wrong deposit" };
let coins = [];

function table(cols, rows, empty) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
}

/** Each asset's price in USDT: directly, or through BTC. */
function valuer(prices) {
  // A pair that never traded has no price ("0"): it values nothing.
  const p = new Map(prices.filter((t) => Number(t.price) > 0).map((t) => [t.symbol, Number(t.price)]));
  return (asset) => {
    if (asset === QUOTE) return 1;
    if (p.has(asset + QUOTE)) return p.get(asset + QUOTE);
    if (p.has(`${asset}BTC`) && p.has(`BTC${QUOTE}`)) return p.get(`${asset}BTC`) * p.get(`BTC${QUOTE}`);
    return null;
  };
}

async function loadBalances() {
  const [all, prices] = await Promise.all([
    session.signed("GET", "/sapi/v1/capital/config/getall"), get("/api/v3/ticker/price")]);
  coins = all;
  const value = valuer(prices);
  let total = 0;
  const rows = all.map((c) => {
    const amount = Number(c.free) + Number(c.locked) + Number(c.withdrawing);
    const v = value(c.coin);
    if (v !== null) total += amount * v;
    return h("tr", { dataset: { coin: c.coin } }, h("td", {}, c.coin), h("td", {}, trimZeros(c.free)),
      h("td", {}, trimZeros(c.locked)), h("td", {}, trimZeros(c.withdrawing)),
      h("td", {}, v === null ? "–" : `${fmt(amount * v, 2)} ${QUOTE}`),
      h("td", {}, c.networkList.length ? c.networkList.map((n) => n.network).join(", ") : h("span", { class: "muted" }, "no wallet")));
  });
  $("#total").textContent = `${fmt(total, 2)} ${QUOTE}`;
  $("#balances").replaceChildren(table(["Coin", "Available", "In orders", "Withdrawing", "Value", "Networks"], rows, "No coins."));
  fillCoins("#dep-coin", "#dep-network");
  fillCoins("#wd-coin", "#wd-network");
}

function fillCoins(coinSel, netSel) {
  const sel = $(coinSel);
  const keep = sel.value;
  const usable = coins.filter((c) => c.networkList.length);
  sel.replaceChildren(...usable.map((c) => h("option", { value: c.coin, selected: c.coin === keep }, c.coin)));
  const nets = () => {
    const coin = usable.find((c) => c.coin === sel.value);
    $(netSel).replaceChildren(...(coin ? coin.networkList : []).map((n) => h("option", { value: n.network }, n.network)));
    withdrawInfo();
  };
  sel.onchange = nets;
  $(netSel).onchange = withdrawInfo;
  nets();
  if (!usable.length) {
    sel.replaceChildren(h("option", { value: "" }, "–"));
    $(netSel).replaceChildren(h("option", { value: "" }, "no wallets"));
  }
  // Nothing to deposit or withdraw until a wallet serves a coin.
  $("#dep-show").disabled = !usable.length;
  $("#wd-submit").disabled = !usable.length;
}

function withdrawInfo() {
  const coin = coins.find((c) => c.coin === $("#wd-coin").value);
  const net = coin && coin.networkList.find((n) => n.network === $("#wd-network").value);
  $("#wd-info").textContent = net
    ? `Available ${trimZeros(coin.free)} ${coin.coin} · fee ${trimZeros(net.withdrawFee)} · minimum ${trimZeros(net.withdrawMin)}`
    : "No wallet serves withdrawals yet.";
}

async function showAddress() {
  const box = $("#dep-address");
  try {
    const a = await session.signed("GET", "/sapi/v1/capital/deposit/address",
                                   { coin: $("#dep-coin").value, network: $("#dep-network").value });
    box.replaceChildren(h("div", { class: "inline" }, h("span", { class: "qr" }, qrSvg(a.address)),
      h("div", {}, h("p", { class: "muted" }, `Your ${a.coin} deposit address`),
        h("p", { class: "address", id: "dep-address-text" }, a.address),
        h("button", { type: "button", onclick: () => navigator.clipboard.writeText(a.address).then(() => notice("Copied", "ok")) }, "Copy"))));
  } catch (e) {
    box.replaceChildren(h("p", { class: "error" }, e.message));
  }
}

async function loadHistory() {
  const [deps, wds] = await Promise.all([
    session.signed("GET", "/sapi/v1/capital/deposit/hisrec"),
    session.signed("GET", "/sapi/v1/capital/withdraw/history")]);
  $("#dep-history").replaceChildren(table(["Time", "Coin", "Amount", "Confirmations", "Status"],
    deps.map((d) => h("tr", {}, h("td", {}, time(d.insertTime, true)), h("td", {}, d.coin), h("td", {}, trimZeros(d.amount)),
      h("td", {}, d.confirmTimes), h("td", {}, DEPOSIT_STATUS[d.status] || String(d.status)))), "No deposits yet."));
  $("#wd-history").replaceChildren(table(["Time", "Coin", "Amount", "Fee", "Address", "Status"],
    wds.map((w) => h("tr", { dataset: { withdrawalId: w.id } }, h("td", {}, w.applyTime), h("td", {}, w.coin),
      h("td", {}, trimZeros(w.amount)), h("td", {}, trimZeros(w.transactionFee)), h("td", { class: "address" }, w.address),
      h("td", { class: "status" }, WITHDRAW_STATUS[w.status] || String(w.status)))), "No withdrawals yet."));
}

async function withdraw(ev) {
  ev.preventDefault();
  const err = $("#wd-error");
  err.textContent = "";
  if (!session.signedIn) { $("#signin").showModal(); return; }
  $("#wd-submit").disabled = true;
  try {
    const res = await session.signed("POST", "/sapi/v1/capital/withdraw/apply", {
      coin: $("#wd-coin").value, network: $("#wd-network").value, address: $("#wd-address").value.trim(),
      amount: $("#wd-amount").value.trim(), totpCode: $("#wd-code").value.trim() });
    notice(`Withdrawal ${res.id} requested`, "ok");
    $("#wd-code").value = "";
    await Promise.all([loadHistory(), loadBalances()]);
  } catch (e) {
    err.textContent = e.message;
  } finally {
    $("#wd-submit").disabled = false;
  }
}

let poller;
let stream;

async function refresh() {
  clearInterval(poller);
  if (stream) { stream.close(); stream = null; }
  if (!session.signedIn) {
    $("#balances").replaceChildren(h("p", { class: "muted" }, "Sign in to see your wallet."));
    connection("account", "live");
    return;
  }
  const reload = () => Promise.all([loadBalances(), loadHistory()]).catch((e) => notice(e.message, "error"));
  // Balances move live with the user data stream (trades, orders); deposits credited by
  // a watcher, their confirmations and the withdrawals' states are polled.
  const balances = perFrame(() => loadBalances().catch(() => {}));
  stream = new LiveSocket(async () => {
    const { listenKey } = await session.keyed("POST", "/api/v3/userDataStream");
    return `/ws/${listenKey}`;
  }, {
    onState: (st) => connection("account", st),
    onOpen: reload,
    onMessage: (d) => { if (d.e === "outboundAccountPosition" || d.e === "balanceUpdate") balances(); },
  });
  poller = setInterval(() => Promise.all([loadBalances(), loadHistory()]).catch(() => {}), 5000);
}

header("wallet");
$("#dep-show").addEventListener("click", showAddress);
$("#wd-form").addEventListener("submit", withdraw);
session.onChange(refresh);
session.restore().catch((e) => notice(e.message, "error"));
