// Live data: a WebSocket that reconnects with backoff and says its state, and an order
// book kept in sync Binance's way (snapshot, drop u <= lastUpdateId, resync on a gap).
import { get } from "./session.js";

/** A WebSocket to the gateway that comes back after 0.5, 1, 2 ... 15 s. `path` is the
 * path, or an async function giving it for each connection (a user data stream asks for
 * its listen key again: the old one may have expired while the socket was away). */
export class LiveSocket {
  constructor(path, { onMessage, onOpen, onState }) {
    this.path = path;
    this.onMessage = onMessage;
    this.onOpen = onOpen || (() => {});
    this.onState = onState || (() => {});
    this.delay = 500;
    this.closed = false;
    this.ws = null;
    this.connect();
  }

  async connect() {
    if (this.closed) return;
    this.onState(this.ws ? "reconnecting" : "connecting");
    let path;
    try {
      path = typeof this.path === "function" ? await this.path() : this.path;
    } catch {
      this.retry();
      return;
    }
    if (this.closed) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}${path}`);
    this.ws = ws;
    ws.onopen = () => { this.delay = 500; this.onState("live"); this.onOpen(this); };
    ws.onmessage = (ev) => {
      let doc;
      try { doc = JSON.parse(ev.data); } catch { return; }
      this.onMessage(doc);
    };
    ws.onclose = () => this.retry();
    ws.onerror = () => ws.close();
  }

  retry() {
    if (this.closed) return;
    this.onState("reconnecting");
    setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 15_000);
  }

  send(doc) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(doc));
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close();
  }
}

/** The local copy of one book from `<symbol>@depth@100ms` diffs and a REST snapshot. */
export class DepthBook {
  constructor(symbol, onChange) {
    this.symbol = symbol;
    this.onChange = onChange;
    this.bids = new Map();
    this.asks = new Map();
    this.lastUpdateId = 0;
    this.synced = false;
    this.buffer = [];
    this.loading = false;
  }

  reset() {
    this.synced = false;
    this.buffer = [];
    this.snapshot();
  }

  async snapshot() {
    if (this.loading) { // a gap while the snapshot loads: take another one after it
      this.again = true;
      return;
    }
    this.loading = true;
    this.again = false;
    let delay = 200;
    try {
      const snap = await get("/api/v3/depth", { symbol: this.symbol, limit: 1000 });
      this.bids = new Map(snap.bids.map(([p, q]) => [p, q]));
      this.asks = new Map(snap.asks.map(([p, q]) => [p, q]));
      this.lastUpdateId = snap.lastUpdateId;
      this.synced = true;
      const pending = this.buffer;
      this.buffer = [];
      for (const ev of pending) this.apply(ev);
      if (this.synced) this.onChange(this);
    } catch {
      this.synced = false;
      delay = 1000;
    } finally {
      this.loading = false;
    }
    // The snapshot was older than the first buffered diff (or failed): another one.
    if (!this.synced || this.again) setTimeout(() => this.snapshot(), delay);
  }

  /** One diff event (`depthUpdate`). */
  apply(ev) {
    if (!this.synced) {
      this.buffer.push(ev);
      return;
    }
    if (ev.u <= this.lastUpdateId) return; // already in the snapshot
    if (ev.U > this.lastUpdateId + 1) { // a gap: start again from a new snapshot
      this.synced = false;
      this.buffer = [ev];
      this.snapshot();
      return;
    }
    for (const [p, q] of ev.b) if (Number(q) === 0) this.bids.delete(p); else this.bids.set(p, q);
    for (const [p, q] of ev.a) if (Number(q) === 0) this.asks.delete(p); else this.asks.set(p, q);
    this.lastUpdateId = ev.u;
    this.onChange(this);
  }

  /** [[price, qty] ...] best first, as numbers and the original strings. */
  levels(side, n) {
    const m = side === "bids" ? this.bids : this.asks;
    const rows = [...m.entries()].map(([p, q]) => [p, q, Number(p), Number(q)]);
    rows.sort((a, b) => (side === "bids" ? b[2] - a[2] : a[2] - b[2]));
    return n ? rows.slice(0, n) : rows;
  }
}

/** Call `fn` at most once per animation frame, however often it is asked for. */
export function perFrame(fn) {
  let asked = false;
  return () => {
    if (asked) return;
    asked = true;
    requestAnimationFrame(() => { asked = false; fn(); });
  };
}
