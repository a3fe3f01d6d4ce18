// The browser session: a non-extractable Ed25519 key made here (WebCrypto) and registered
// as this session's API key at sign-in (POST /api/v1/auth/browser-session). Requests are
// signed with it as Binance signs Ed25519 requests; the private key never leaves the
// browser's key store (IndexedDB holds the CryptoKey object, not its bytes). The refresh
// token is an HttpOnly cookie page script cannot read; the access token lives in memory.

const DB = "tradeplane-ui";
const STORE = "session";

function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function idbDo(mode, fn) {
  const db = await idb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
    tx.oncomplete = () => { db.close(); resolve(req.result); };
    tx.onerror = () => { db.close(); reject(tx.error); };
  });
}

const load = () => idbDo("readonly", (s) => s.get("current"));
const save = (value) => idbDo("readwrite", (s) => s.put(value, "current"));
const clear = () => idbDo("readwrite", (s) => s.delete("current"));

/** An API error: Binance's {code, msg} with the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, msg) {
    super(msg || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function answer(resp) {
  const text = await resp.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = null; }
  if (!resp.ok) {
    throw new ApiError(resp.status, doc && doc.code, (doc && doc.msg) || text.slice(0, 200));
  }
  return doc;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.append(k, String(v));
  }
  return q.toString();
}

/** A public (unsigned) GET. */
export async function get(path, params) {
  const q = query(params);
  return answer(await fetch(q ? `${path}?${q}` : path));
}

/** JSON to our own endpoints (users, admin), with a bearer token when given. */
export async function postJson(path, body, token, method = "POST") {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  return answer(await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  }));
}

function b64(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
}

let clockOffset = 0;

async function syncClock() {
  const t0 = Date.now();
  const { serverTime } = await get("/api/v3/time");
  clockOffset = serverTime - Math.round((t0 + Date.now()) / 2);
}

class Session {
  constructor() {
    this.current = null; // {privateKey, apiKey, email, expiresAt}
    this.accessToken = null;
    this.listeners = new Set();
  }

  get signedIn() { return this.current !== null; }
  get apiKey() { return this.current && this.current.apiKey; }
  get email() { return this.current && this.current.email; }

  onChange(fn) { this.listeners.add(fn); }
  notify() { for (const fn of this.listeners) fn(this); }

  async restore() {
    try {
      const found = await load();
      if (found && found.expiresAt > Date.now() + 60_000) this.current = found;
      else if (found) await clear();
    } catch { this.current = null; }
    if (this.current) syncClock().catch(() => {});
    this.notify();
  }

  /** Sign in; throws ApiError (-1002 with "Two-factor code required." asks for the code). */
  async signIn(email, password, totpCode) {
    const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const raw = await crypto.subtle.exportKey("raw", pair.publicKey);
    const doc = await postJson("/api/v1/auth/browser-session", {
      email, password, totpCode: totpCode || null, publicKey: b64(raw),
    });
    this.accessToken = doc.accessToken;
    this.current = { privateKey: pair.privateKey, apiKey: doc.apiKey, email,
                     expiresAt: doc.expiresAt };
    await save(this.current);
    await syncClock().catch(() => {});
    this.notify();
  }

  async token() {
    if (!this.accessToken) {
      const doc = await postJson("/api/v1/auth/browser-refresh");
      this.accessToken = doc.accessToken;
    }
    return this.accessToken;
  }

  /** Our own user endpoints with the access token (renewed once through the cookie). */
  async user(method, path, body) {
    try {
      return await postJson(path, body, await this.token(), method);
    } catch (err) {
      if (err.status !== 401 || !this.accessToken) throw err;
      this.accessToken = null; // expired: once more with a new one
      return postJson(path, body, await this.token(), method);
    }
  }

  /** End every session of the user (all devices), then this one here. The browser
   * sessions' keys are revoked first: ending a session alone leaves its key valid until
   * it expires. */
  async signOutEverywhere() {
    const keys = await this.user("GET", "/api/v1/user/api-keys");
    for (const k of keys.filter((k) => k.label === "browser session")) {
      await this.user("DELETE", `/api/v1/user/api-keys/${encodeURIComponent(k.apiKey)}`);
    }
    await this.user("POST", "/api/v1/auth/logout-all");
    this.current = null;
    this.accessToken = null;
    await clear();
    this.notify();
  }

  async signOut() {
    const apiKey = this.apiKey;
    try {
      await postJson("/api/v1/auth/browser-logout", { apiKey }, await this.token());
    } catch { /* the session is gone already; forget it here too */ }
    this.current = null;
    this.accessToken = null;
    await clear();
    this.notify();
  }

  /** A signed Binance request: the parameters in the query string, signed with the key. */
  async signed(method, path, params = {}) {
    if (!this.current) throw new ApiError(401, -2014, "Sign in first.");
    const payload = query({ ...params, recvWindow: 10000, timestamp: Date.now() + clockOffset });
    const sig = await crypto.subtle.sign({ name: "Ed25519" }, this.current.privateKey,
                                         new TextEncoder().encode(payload));
    const url = `${path}?${payload}&signature=${encodeURIComponent(b64(sig))}`;
    const resp = await fetch(url, { method, headers: { "X-MBX-APIKEY": this.current.apiKey } });
    try {
      return await answer(resp);
    } catch (err) {
      if (err.code === -2015 || err.code === -2014) { // the key was revoked or expired
        this.current = null;
        await clear();
        this.notify();
      }
      throw err;
    }
  }

  /** A request with only the API key (user data stream listen keys). */
  async keyed(method, path, params) {
    const q = query(params);
    return answer(await fetch(q ? `${path}?${q}` : path, {
      method, headers: { "X-MBX-APIKEY": this.current.apiKey },
    }));
  }
}

export const session = new Session();
