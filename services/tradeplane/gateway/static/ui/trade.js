// The trade page: market bar, order book, candles and depth chart, trade tape, order
// entry, and the user's orders and trades, all live over the gateway's WebSockets.
import { AreaSeries, CandlestickSeries, HistogramSeries, createChart, createOptionsChart }
  from "/static/vendor/lightweight-charts/lightweight-charts.mjs";
import { $, connection, decimalsOf, fmt, h, header, notice, onTheme, theme, time, toStep, trimZeros }
  from "./common.js";
import { DepthBook, LiveSocket, perFrame } from "./net.js";
import { get, session } from "./session.js";

const INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d"];
const BOOK_ROWS = 17;
const TAPE_ROWS = 40;
/** Ask before placing a limit order this far (fraction) from the last price. */
const FAR_FROM_MARKET = 0.05;

const state = {
  symbol: null, pair: null, pairs: [], interval: "1m", last: null,
  balances: new Map(), open: new Map(), history: [], myTrades: [],
};

// --------------------------------------------------------------------------- helpers
const filter = (pair, type) => pair.filters.find((f) => f.filterType === type) || {};
const tick = () => filter(state.pair, "PRICE_FILTER").tickSize || "0.01";
const step = () => filter(state.pair, "LOT_SIZE").stepSize || "0.00001";
const pdp = () => decimalsOf(tick());
const qdp = () => Math.min(decimalsOf(step()), 6);
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function selectTab(group, chosen) {
  for (const [tab, pane] of group) {
    const on = tab === chosen;
    $(`#${tab}`).setAttribute("aria-selected", String(on));
    $(`#${pane}`).hidden = !on;
  }
}

/** A tab list: click, or the arrow keys (WAI-ARIA's tabs pattern). */
function tabs(group, after) {
  const choose = (tab) => { selectTab(group, tab); if (after) after(tab); };
  group.forEach(([tab], i) => {
    const el = $(`#${tab}`);
    el.addEventListener("click", () => choose(tab));
    el.addEventListener("keydown", (ev) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
      if (!step) return;
      const [next] = group[(i + step + group.length) % group.length];
      $(`#${next}`).focus();
      choose(next);
    });
  });
}

// --------------------------------------------------------------------------- market bar
async function loadMarkets() {
  const info = await get("/api/v3/exchangeInfo");
  state.pairs = info.symbols;
  const wanted = decodeURIComponent(location.pathname.split("/")[2] || "").toUpperCase();
  state.pair = state.pairs.find((p) => p.symbol === wanted) || state.pairs[0];
  state.symbol = state.pair.symbol;
  document.title = `${state.pair.baseAsset}/${state.pair.quoteAsset} · tradeplane`;
  const sel = $("#symbol");
  sel.replaceChildren(...state.pairs.map((p) =>
    h("option", { value: p.symbol, selected: p.symbol === state.symbol }, `${p.baseAsset}/${p.quoteAsset}`)));
  sel.addEventListener("change", () => { location.href = `/trade/${sel.value}`; });
  $("#pair-status").textContent = state.pair.status;
  $("#qty-label").textContent = `Amount (${state.pair.baseAsset})`;
  $("#quote-label").textContent = `Total (${state.pair.quoteAsset})`;
}

function showTicker(t) {
  // A REST ticker (24hr) or a stream one (24hrTicker): the same values, other names.
  const last = t.lastPrice ?? t.c;
  const pct = Number(t.priceChangePercent ?? t.P);
  const traded = Number(last) > 0; // a pair that never traded has no price yet
  state.last = traded ? Number(last) : null;
  $("#last").textContent = traded ? fmt(last, pdp()) : "–";
  if (!traded) return;
  const change = $("#change");
  change.textContent = `${pct >= 0 ? "+" : ""}${fmt(pct, 2)}%`;
  change.className = pct >= 0 ? "up" : "down";
  $("#high").textContent = fmt(t.highPrice ?? t.h, pdp());
  $("#low").textContent = fmt(t.lowPrice ?? t.l, pdp());
  $("#volume").textContent = `${fmt(t.volume ?? t.v, qdp())} ${state.pair.baseAsset}`;
}

// --------------------------------------------------------------------------- order book
let book;

function renderBook() {
  if (!book || !book.synced) return;
  const asks = book.levels("asks", BOOK_ROWS);
  const bids = book.levels("bids", BOOK_ROWS);
  let cum = 0;
  const askRows = asks.map((l) => [...l, (cum += l[3])]);
  cum = 0;
  const bidRows = bids.map((l) => [...l, (cum += l[3])]);
  const most = Math.max(askRows.length ? askRows[askRows.length - 1][4] : 0,
                        bidRows.length ? bidRows[bidRows.length - 1][4] : 0, 1e-12);
  const row = (side) => ([p, q, pn, qn, c]) => {
    const bar = h("span", { class: "bar" });
    bar.style.width = `${Math.min(100, (c / most) * 100).toFixed(1)}%`;
    return h("button", { type: "button", class: "level", dataset: { price: p, side },
      "aria-label": `${side === "asks" ? "Ask" : "Bid"} ${trimZeros(p)}, amount ${trimZeros(q)}: use this price`,
      onclick: () => fillFromBook(p, side, c) },
    bar, h("span", { class: "price" }, fmt(pn, pdp())), h("span", {}, fmt(qn, qdp())),
    h("span", {}, fmt(c, qdp())));
  };
  $("#asks").replaceChildren(...askRows.reverse().map(row("asks")));
  $("#bids").replaceChildren(...bidRows.map(row("bids")));
  const bestAsk = asks[0] ? asks[0][2] : null;
  const bestBid = bids[0] ? bids[0][2] : null;
  $("#spread").textContent = bestAsk !== null && bestBid !== null
    ? `Spread ${fmt(bestAsk - bestBid, pdp())} (${fmt(((bestAsk - bestBid) / bestAsk) * 100, 3)}%)`
    : "–";
  if (!$("#depth").hidden) renderDepthChart();
}

/** Clicking a level takes its price (and, when none is given yet, the amount up to it)
 * into the order form; the side stays the trader's choice. */
function fillFromBook(price, side, cumulative) {
  const type = $("#o-type");
  if (type.value === "MARKET") type.value = "LIMIT";
  $("#o-price").value = trimZeros(price);
  if (!$("#o-qty").value) $("#o-qty").value = toStep(cumulative, step());
  formChanged();
  $("#o-qty").focus();
}

// --------------------------------------------------------------------------- charts
let candleChart, candleSeries, volumeSeries, depthChart, bidArea, askArea;

function chartColors() {
  return {
    // The library's logo link injects an inline <style>, which the page's CSP refuses:
    // the attribution TradingView asks for is the link under the chart and the footer.
    layout: { background: { color: "transparent" }, textColor: css("--fg-muted"),
              attributionLogo: false },
    grid: { vertLines: { color: css("--grid") }, horzLines: { color: css("--grid") } },
  };
}

function makeCharts() {
  candleChart = createChart($("#candles"), { ...chartColors(), autoSize: true,
    timeScale: { timeVisible: true, secondsVisible: false }, rightPriceScale: { borderVisible: false } });
  candleSeries = candleChart.addSeries(CandlestickSeries, {
    upColor: css("--up"), downColor: css("--down"), borderVisible: false,
    wickUpColor: css("--up"), wickDownColor: css("--down"),
    priceFormat: { type: "price", precision: pdp(), minMove: Number(tick()) } });
  volumeSeries = candleChart.addSeries(HistogramSeries, { priceScaleId: "vol", priceFormat: { type: "volume" } });
  candleChart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
  depthChart = createOptionsChart($("#depth"), { ...chartColors(), autoSize: true });
  // Cumulative amount by price (a price axis, not time): a step line per side.
  bidArea = depthChart.addSeries(AreaSeries, { lineColor: css("--up"), topColor: css("--up-fill"),
    bottomColor: css("--up-fill"), lineType: 1, lineWidth: 2, priceFormat: { type: "volume" } });
  askArea = depthChart.addSeries(AreaSeries, { lineColor: css("--down"), topColor: css("--down-fill"),
    bottomColor: css("--down-fill"), lineType: 1, lineWidth: 2, priceFormat: { type: "volume" } });
  onTheme(() => {
    candleChart.applyOptions(chartColors());
    depthChart.applyOptions(chartColors());
  });
}

const candle = (k) => ({ time: Math.floor(k[0] / 1000), open: +k[1], high: +k[2], low: +k[3], close: +k[4] });
const volume = (k) => ({ time: Math.floor(k[0] / 1000), value: +k[5],
                         color: +k[4] >= +k[1] ? css("--up-vol") : css("--down-vol") });

async function loadCandles() {
  const rows = await get("/api/v3/klines", { symbol: state.symbol, interval: state.interval, limit: 500 });
  candleSeries.setData(rows.map(candle));
  volumeSeries.setData(rows.map(volume));
  $("#no-candles").hidden = rows.length > 0;
  candleChart.timeScale().fitContent();
}

function onKline(k) {
  $("#no-candles").hidden = true;
  const row = [k.t, k.o, k.h, k.l, k.c, k.v];
  candleSeries.update(candle(row));
  volumeSeries.update(volume(row));
}

function renderDepthChart() {
  if (!book || !book.synced) return;
  const bids = book.levels("bids", 200);
  const asks = book.levels("asks", 200);
  let cum = 0;
  const b = bids.map(([, , p, q]) => ({ time: p, value: (cum += q) })).reverse();
  cum = 0;
  const a = asks.map(([, , p, q]) => ({ time: p, value: (cum += q) }));
  bidArea.setData(b);
  askArea.setData(a);
  depthChart.timeScale().fitContent();
}

function intervals() {
  $("#intervals").replaceChildren(...INTERVALS.map((iv) => h("button", {
    type: "button", class: "iv", "aria-pressed": String(iv === state.interval), dataset: { interval: iv },
    onclick: () => {
      if (iv === state.interval) return;
      market.send({ method: "UNSUBSCRIBE", params: [`${state.symbol.toLowerCase()}@kline_${state.interval}`], id: 2 });
      state.interval = iv;
      market.send({ method: "SUBSCRIBE", params: [`${state.symbol.toLowerCase()}@kline_${iv}`], id: 3 });
      intervals();
      loadCandles();
    } }, iv)));
}

// --------------------------------------------------------------------------- trade tape
function tapeRow(price, qty, ms, buyerMaker) {
  return h("div", { class: `trow ${buyerMaker ? "down" : "up"}` },
    h("span", {}, fmt(price, pdp())), h("span", {}, fmt(qty, qdp())), h("span", { class: "muted" }, time(ms)));
}

// Market trades arrive as fast as they happen: drawn together once per frame.
let tapeQueue = [];
const flushTape = perFrame(() => {
  const rows = tapeQueue;
  tapeQueue = [];
  const el = $("#tape");
  el.prepend(...rows.reverse());
  while (el.children.length > TAPE_ROWS) el.lastChild.remove();
});

async function loadTape() {
  const trades = await get("/api/v3/trades", { symbol: state.symbol, limit: TAPE_ROWS });
  $("#tape").replaceChildren(...trades.reverse().map((t) => tapeRow(t.price, t.qty, t.time, t.isBuyerMaker)));
}

// --------------------------------------------------------------------------- market stream
let market;

function startMarket() {
  const s = state.symbol.toLowerCase();
  book = new DepthBook(state.symbol, perFrame(renderBook));
  const streams = [`${s}@depth@100ms`, `${s}@trade`, `${s}@kline_${state.interval}`, `${s}@ticker`];
  market = new LiveSocket(`/stream?streams=${streams.join("/")}`, {
    onState: (st) => connection("market", st),
    onOpen: () => { book.reset(); loadTape().catch(() => {}); },
    onMessage: (doc) => {
      const d = doc.data;
      if (!d || !d.e) return;
      if (d.e === "depthUpdate") book.apply(d);
      else if (d.e === "trade") {
        tapeQueue.push(tapeRow(d.p, d.q, d.T, d.m));
        flushTape();
        state.last = Number(d.p); // the ticker follows within its own period
        $("#last").textContent = fmt(d.p, pdp());
      }
      else if (d.e === "kline" && d.k.i === state.interval) onKline(d.k);
      else if (d.e === "24hrTicker") showTicker(d);
    },
  });
}

// --------------------------------------------------------------------------- order entry
const side = () => document.querySelector("input[name=side]:checked").value;
const by = () => document.querySelector("input[name=by]:checked").value;

function formChanged() {
  const type = $("#o-type").value;
  const show = {
    stop: ["STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT", "OCO"].includes(type),
    price: type !== "MARKET",
    stoplimit: type === "OCO",
    by: type === "MARKET",
    qty: type !== "MARKET" || by() === "qty",
    quote: type === "MARKET" && by() === "quote",
    opts: type !== "MARKET",
  };
  for (const el of document.querySelectorAll("#order-form [data-for]")) el.hidden = !show[el.dataset.for];
  $("#o-postonly").disabled = type !== "LIMIT";
  $("#o-tif").disabled = type === "OCO" || $("#o-postonly").checked;
  const label = document.querySelector("[data-for=price]").firstChild;
  label.textContent = type === "OCO" ? "Limit price " : "Price ";
  const submit = $("#o-submit");
  submit.textContent = `${side() === "BUY" ? "Buy" : "Sell"} ${state.pair ? state.pair.baseAsset : ""}`;
  submit.className = `primary ${side() === "BUY" ? "buy" : "sell"}`;
  showAvailable();
}

function available() {
  if (!state.pair) return 0;
  const asset = side() === "BUY" ? state.pair.quoteAsset : state.pair.baseAsset;
  const b = state.balances.get(asset);
  return b ? Number(b.free) : 0;
}

function showAvailable() {
  if (!state.pair) return;
  const asset = side() === "BUY" ? state.pair.quoteAsset : state.pair.baseAsset;
  $("#avail").textContent = session.signedIn ? `${fmt(available(), side() === "BUY" ? 2 : qdp())} ${asset}` : "sign in to trade";
}

function onSlider() {
  const pct = Number($("#o-pct").value);
  $("#pct-out").textContent = `${pct}%`;
  const amount = (available() * pct) / 100;
  const type = $("#o-type").value;
  if (side() === "SELL") {
    $("#o-qty").value = toStep(amount, step());
  } else if (type === "MARKET" && by() === "quote") {
    $("#o-quote").value = toStep(amount, tick());
  } else {
    const price = type === "MARKET" ? state.last : Number($("#o-price").value || state.last);
    if (price > 0) $("#o-qty").value = toStep(amount / price, step());
    if (type === "MARKET") { document.querySelector("input[name=by][value=qty]").checked = true; formChanged(); }
  }
}

function orderParams() {
  const type = $("#o-type").value;
  const v = (id) => $(id).value.trim();
  const base = { symbol: state.symbol, side: side() };
  if (type === "MARKET") {
    return by() === "quote"
      ? { ...base, type, quoteOrderQty: v("#o-quote"), newOrderRespType: "RESULT" }
      : { ...base, type, quantity: v("#o-qty"), newOrderRespType: "RESULT" };
  }
  if (type === "LIMIT" && $("#o-postonly").checked) {
    return { ...base, type: "LIMIT_MAKER", quantity: v("#o-qty"), price: v("#o-price"), newOrderRespType: "RESULT" };
  }
  if (type === "LIMIT") {
    return { ...base, type, timeInForce: $("#o-tif").value, quantity: v("#o-qty"), price: v("#o-price"), newOrderRespType: "RESULT" };
  }
  if (type === "OCO") {
    // The limit leg takes profit and the stop leg limits the loss: for a SELL the limit
    // is above the market and the stop below, for a BUY the other way round.
    const limitLeg = { Type: "LIMIT_MAKER", Price: v("#o-price") };
    const stopLeg = { Type: "STOP_LOSS_LIMIT", Price: v("#o-stoplimit"), StopPrice: v("#o-stop"), TimeInForce: "GTC" };
    const [above, below] = side() === "SELL" ? [limitLeg, stopLeg] : [stopLeg, limitLeg];
    const legs = {};
    for (const [k, val] of Object.entries(above)) legs[`above${k}`] = val;
    for (const [k, val] of Object.entries(below)) legs[`below${k}`] = val;
    return { ...base, quantity: v("#o-qty"), ...legs };
  }
  return { ...base, type, timeInForce: $("#o-tif").value, quantity: v("#o-qty"), price: v("#o-price"), stopPrice: v("#o-stop") };
}

/** The market's price: the last trade's, else the middle of the book. */
function marketPrice() {
  if (state.last) return [state.last, "the last price"];
  const [bid] = book && book.synced ? book.levels("bids", 1) : [];
  const [ask] = book && book.synced ? book.levels("asks", 1) : [];
  return bid && ask ? [(bid[2] + ask[2]) / 2, "the middle of the book"] : [null, ""];
}

function confirmFar(params) {
  const price = Number(params.price || params.abovePrice || 0);
  const [market, what] = marketPrice();
  if (!price || !market) return Promise.resolve(true);
  const off = Math.abs(price - market) / market;
  if (off < FAR_FROM_MARKET) return Promise.resolve(true);
  $("#confirm-text").textContent = `${params.side} at ${trimZeros(price)} is ${fmt(off * 100, 1)}% `
    + `from ${what} ${fmt(market, pdp())}. Place it anyway?`;
  const dlg = $("#confirm");
  dlg.returnValue = "";
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true }));
}

async function submitOrder(ev) {
  ev.preventDefault();
  const err = $("#o-error");
  err.textContent = "";
  if (!session.signedIn) { $("#signin").showModal(); return; }
  const params = orderParams();
  if (!(await confirmFar(params))) return;
  const button = $("#o-submit");
  button.disabled = true;
  try {
    const path = $("#o-type").value === "OCO" ? "/api/v3/orderList/oco" : "/api/v3/order";
    const res = await session.signed("POST", path, params);
    notice(`${params.side} ${params.type || "OCO"} ${res.status ? res.status.toLowerCase() : "placed"}`, "ok");
    $("#o-pct").value = "0";
    $("#pct-out").textContent = "0%";
  } catch (e) {
    err.textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

// --------------------------------------------------------------------------- your orders
const FINAL = new Set(["FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH"]);

function table(cols, rows, empty) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
}

function renderOpen() {
  const orders = [...state.open.values()].sort((a, b) => b.time - a.time);
  $("#open-count").textContent = orders.length ? `(${orders.length})` : "";
  $("#pane-open").replaceChildren(table(
    ["Time", "Side", "Type", "Price", "Stop", "Amount", "Filled", "Status", ""],
    orders.map((o) => h("tr", { dataset: { orderId: o.orderId } },
      h("td", {}, time(o.time)), h("td", { class: o.side === "BUY" ? "up" : "down" }, o.side),
      h("td", {}, o.type), h("td", {}, trimZeros(o.price)), h("td", {}, Number(o.stopPrice) ? trimZeros(o.stopPrice) : ""),
      h("td", {}, trimZeros(o.origQty)), h("td", {}, trimZeros(o.executedQty)), h("td", {}, o.status),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "amend", "aria-label": `Amend amount of order ${o.orderId}`,
          onclick: (ev) => amend(o, ev.target) }, "Amend"),
        h("button", { type: "button", class: "cancel", "aria-label": `Cancel order ${o.orderId}`,
          onclick: () => cancel(o) }, "Cancel")))),
    session.signedIn ? "No open orders." : "Sign in to see your orders."));
}

function renderHistory() {
  $("#pane-history").replaceChildren(table(
    ["Time", "Side", "Type", "Price", "Amount", "Filled", "Total", "Status"],
    state.history.slice(0, 100).map((o) => h("tr", {},
      h("td", {}, time(o.updateTime || o.time, true)), h("td", { class: o.side === "BUY" ? "up" : "down" }, o.side),
      h("td", {}, o.type), h("td", {}, trimZeros(o.price)), h("td", {}, trimZeros(o.origQty)),
      h("td", {}, trimZeros(o.executedQty)), h("td", {}, trimZeros(o.cummulativeQuoteQty)), h("td", {}, o.status))),
    session.signedIn ? "No orders yet." : "Sign in to see your orders."));
}

function renderMyTrades() {
  $("#pane-mytrades").replaceChildren(table(
    ["Time", "Side", "Price", "Amount", "Total", "Fee", "Role"],
    state.myTrades.slice(0, 100).map((t) => h("tr", { dataset: { tradeId: t.id } },
      h("td", {}, time(t.time, true)), h("td", { class: t.isBuyer ? "up" : "down" }, t.isBuyer ? "BUY" : "SELL"),
      h("td", {}, trimZeros(t.price)), h("td", {}, trimZeros(t.qty)), h("td", {}, fmt(t.quoteQty, pdp())),
      h("td", {}, `${trimZeros(t.commission)} ${t.commissionAsset}`), h("td", {}, t.isMaker ? "Maker" : "Taker"))),
    session.signedIn ? "No trades yet." : "Sign in to see your trades."));
  $("#tape-mine").replaceChildren(...state.myTrades.slice(0, TAPE_ROWS).map((t) =>
    tapeRow(t.price, t.qty, t.time, !t.isBuyer)));
}

function renderBalances() {
  const rows = [...state.balances.entries()].filter(([, b]) => Number(b.free) || Number(b.locked));
  $("#pane-balances").replaceChildren(table(["Asset", "Available", "In orders"],
    rows.map(([a, b]) => h("tr", {}, h("td", {}, a), h("td", {}, trimZeros(b.free)), h("td", {}, trimZeros(b.locked)))),
    session.signedIn ? "No balances." : "Sign in to see your balances."));
  showAvailable();
}

async function cancel(o) {
  try {
    await session.signed("DELETE", "/api/v3/order", { symbol: o.symbol, orderId: o.orderId });
  } catch (e) { notice(e.message, "error"); }
}

function amend(o, button) {
  const input = h("input", { class: "amend-qty", inputmode: "decimal", value: trimZeros(o.origQty),
    "aria-label": `New amount for order ${o.orderId}` });
  const done = async () => {
    try {
      await session.signed("PUT", "/api/v3/order/amend/keepPriority",
                           { symbol: o.symbol, orderId: o.orderId, newQty: input.value.trim() });
      notice("Order amended", "ok");
      await loadOrders();
    } catch (e) { notice(e.message, "error"); renderOpen(); }
  };
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") done(); if (ev.key === "Escape") renderOpen(); });
  button.replaceWith(input, h("button", { type: "button", class: "amend-save", onclick: done }, "Save"));
  input.focus();
  input.select();
}

async function loadOrders() {
  const [open, all, trades] = await Promise.all([
    session.signed("GET", "/api/v3/openOrders", { symbol: state.symbol }),
    session.signed("GET", "/api/v3/allOrders", { symbol: state.symbol, limit: 100 }),
    session.signed("GET", "/api/v3/myTrades", { symbol: state.symbol, limit: 100 }),
  ]);
  state.open = new Map(open.map((o) => [o.orderId, o]));
  state.history = all.filter((o) => FINAL.has(o.status)).sort((a, b) => b.updateTime - a.updateTime);
  state.myTrades = trades.sort((a, b) => b.time - a.time);
  renderOpen(); renderHistory(); renderMyTrades();
}

async function loadAccount() {
  const acc = await session.signed("GET", "/api/v3/account");
  state.balances = new Map(acc.balances.map((b) => [b.asset, { free: b.free, locked: b.locked }]));
  renderBalances();
}

/** One executionReport from the user data stream: the order tables follow it. */
function onExecution(r) {
  if (r.s !== state.symbol) return;
  const o = {
    symbol: r.s, orderId: r.i, clientOrderId: r.c, side: r.S, type: r.o, price: r.p, stopPrice: r.P,
    origQty: r.q, executedQty: r.z, cummulativeQuoteQty: r.Z, status: r.X, time: r.O, updateTime: r.T || r.E,
  };
  if (FINAL.has(o.status)) {
    state.open.delete(o.orderId);
    state.history = [o, ...state.history.filter((x) => x.orderId !== o.orderId)];
  } else {
    state.open.set(o.orderId, { ...(state.open.get(o.orderId) || {}), ...o });
  }
  if (r.x === "TRADE") {
    const t = { id: r.t, price: r.L, qty: r.l, quoteQty: Number(r.L) * Number(r.l), commission: r.n || "0",
                commissionAsset: r.N || "", time: r.T, isBuyer: r.S === "BUY", isMaker: r.m };
    state.myTrades = [t, ...state.myTrades];
    renderMyTrades();
  }
  renderOpen(); renderHistory();
}

let user;
let keepalive;

async function startUser() {
  if (user) { user.close(); user = null; }
  clearInterval(keepalive);
  if (!session.signedIn) {
    state.open.clear(); state.history = []; state.myTrades = []; state.balances.clear();
    renderOpen(); renderHistory(); renderMyTrades(); renderBalances();
    connection("account", "live");
    return;
  }
  let listenKey = null;
  user = new LiveSocket(async () => {
    ({ listenKey } = await session.keyed("POST", "/api/v3/userDataStream"));
    return `/ws/${listenKey}`;
  }, {
    onState: (st) => connection("account", st),
    // Reloaded on every (re)connection: nothing missed while the socket was away.
    onOpen: () => { loadOrders().catch((e) => notice(e.message, "error")); loadAccount().catch(() => {}); },
    onMessage: (d) => {
      if (d.e === "executionReport") onExecution(d);
      else if (d.e === "outboundAccountPosition") {
        for (const b of d.B) state.balances.set(b.a, { free: b.f, locked: b.l });
        renderBalances();
      }
    },
  });
  keepalive = setInterval(() => {
    if (listenKey) session.keyed("PUT", "/api/v3/userDataStream", { listenKey }).catch(() => {});
  }, 30 * 60_000);
}

// --------------------------------------------------------------------------- start
async function main() {
  header("trade");
  await loadMarkets();
  makeCharts();
  intervals();
  tabs([["tab-candles", "candles"], ["tab-depth", "depth"]], (t) => {
    if (t === "tab-depth") renderDepthChart();
  });
  tabs([["tab-tape-market", "tape"], ["tab-tape-mine", "tape-mine"]]);
  tabs([["tab-open", "pane-open"], ["tab-history", "pane-history"], ["tab-mytrades", "pane-mytrades"],
        ["tab-balances", "pane-balances"]]);
  for (const el of document.querySelectorAll("#order-form input, #order-form select")) {
    if (el.id !== "o-pct") el.addEventListener("change", formChanged);
  }
  $("#o-pct").addEventListener("input", onSlider);
  $("#order-form").addEventListener("submit", submitOrder);
  formChanged();
  get("/api/v3/ticker/24hr", { symbol: state.symbol }).then(showTicker).catch(() => {});
  loadCandles().catch((e) => notice(e.message, "error"));
  startMarket();
  session.onChange(() => startUser());
  await session.restore();
  onTheme(() => { renderBook(); });
  void theme;
}

main().catch((e) => notice(e.message, "error"));
