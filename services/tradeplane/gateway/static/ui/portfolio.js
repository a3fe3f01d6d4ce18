// The portfolio page: the account's value and P&L over time (P&L = change in value minus
// net deposits and withdrawals), from the account snapshots the platform takes, read with
// the signed GET /api/v1/portfolio and refreshed as new snapshots arrive.
import { AreaSeries, BaselineSeries, createChart }
  from "/static/vendor/lightweight-charts/lightweight-charts.mjs";
import { $, connection, h, header, notice, onTheme, time, trimZeros } from "./common.js";
import { session } from "./session.js";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
let period = "interval";
let poller;
let valueChart, valueSeries, pnlChart, pnlSeries;

function chartColors() {
  return {
    // The library's logo link injects an inline <style>, refused by the page's CSP: the
    // attribution is the footer's.
    layout: { background: { color: "transparent" }, textColor: css("--fg-muted"),
              attributionLogo: false },
    grid: { vertLines: { color: css("--grid") }, horzLines: { color: css("--grid") } },
    timeScale: { timeVisible: true, secondsVisible: true },
    rightPriceScale: { borderVisible: false },
  };
}

function makeCharts() {
  valueChart = createChart($("#pf-value-chart"), { ...chartColors(), autoSize: true });
  valueSeries = valueChart.addSeries(AreaSeries, { lineColor: css("--accent") || css("--up"),
    topColor: css("--up-fill"), bottomColor: "transparent", lineWidth: 2,
    priceFormat: { type: "price", precision: 2, minMove: 0.01 } });
  pnlChart = createChart($("#pf-pnl-chart"), { ...chartColors(), autoSize: true });
  pnlSeries = pnlChart.addSeries(BaselineSeries, { baseValue: { type: "price", price: 0 },
    topLineColor: css("--up"), topFillColor1: css("--up-fill"), topFillColor2: "transparent",
    bottomLineColor: css("--down"), bottomFillColor1: "transparent", bottomFillColor2: css("--down-fill"),
    lineWidth: 2, priceFormat: { type: "price", precision: 2, minMove: 0.01 } });
  onTheme(() => { valueChart.applyOptions(chartColors()); pnlChart.applyOptions(chartColors()); });
}

/** A decimal string with 2 places for display (the API's figures are exact strings). */
function money(s, quote) {
  const [i, f = ""] = s.split(".");
  return `${i}.${(f + "00").slice(0, 2)} ${quote}`;
}

function signed(s, quote) {
  return (s.startsWith("-") ? "" : "+") + money(s, quote);
}

async function load() {
  const doc = await session.signed("GET", "/api/v1/portfolio", { period });
  const q = doc.quote;
  $("#pf-value").textContent = money(doc.value, q);
  const pnl = $("#pf-pnl");
  pnl.textContent = signed(doc.pnl, q);
  pnl.dataset.sign = doc.pnl.startsWith("-") ? "down" : doc.pnl.replace(/[0.]/g, "") ? "up" : "flat";
  $("#pf-flows").textContent = signed(doc.netFlows, q);
  const every = Math.round(doc.intervalMs / 1000);
  $("#pf-note").textContent = doc.points.length
    ? `${doc.points.length} snapshot(s), one every ${every >= 86400 ? "day" : `${every} s`}.`
    : "No snapshot yet: the first is taken shortly after funds arrive.";
  // One point per second at most on the chart's time axis (seconds).
  const byTime = new Map(doc.points.map((p) => [Math.floor(p.time / 1000), p]));
  const pts = [...byTime.entries()].sort((a, b) => a[0] - b[0]);
  valueSeries.setData(pts.map(([t, p]) => ({ time: t, value: Number(p.value) })));
  pnlSeries.setData(pts.map(([t, p]) => ({ time: t, value: Number(p.pnl) })));
  valueChart.timeScale().fitContent();
  pnlChart.timeScale().fitContent();
  const rows = doc.points.slice(-20).reverse().map((p) => h("tr", {},
    h("td", {}, time(p.time, true)), h("td", {}, trimZeros(p.value)), h("td", {}, trimZeros(p.pnl))));
  $("#pf-table").replaceChildren(rows.length
    ? h("table", {}, h("thead", {}, h("tr", {}, ["Time", `Value (${q})`, `P&L (${q})`].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows))
    : h("p", { class: "muted empty" }, "No snapshots."));
}

function setPeriod(p) {
  period = p;
  $("#pf-interval").setAttribute("aria-pressed", String(p === "interval"));
  $("#pf-day").setAttribute("aria-pressed", String(p === "day"));
  refresh();
}

async function refresh() {
  clearInterval(poller);
  if (!session.signedIn) {
    $("#pf-note").textContent = "Sign in to see your portfolio.";
    connection("account", "live");
    return;
  }
  const tick = () => load().then(() => connection("account", "live"),
    (e) => { connection("account", "reconnecting"); throw e; });
  await tick().catch((e) => notice(e.message, "error"));
  // Snapshots arrive on the worker's schedule: a poll is all it takes to stay current.
  poller = setInterval(() => tick().catch(() => {}), 5000);
}

header("portfolio");
makeCharts();
$("#pf-interval").addEventListener("click", () => setPeriod("interval"));
$("#pf-day").addEventListener("click", () => setPeriod("day"));
session.onChange(refresh);
session.restore().catch((e) => notice(e.message, "error"));
