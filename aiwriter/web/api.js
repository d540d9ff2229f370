// Talking to the server: JSON calls with the API key, errors in the page's language.
// A server started with --api-key wants it on every API call. It arrives once in the URL's
// fragment (#key=..., never sent over the network) or is asked for, and is kept in this browser.
import { lang, t } from "./i18n.js";

export const KEY_STORE = "aiwriter.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(lang === "zh" ? (e.zh || e.message || `HTTP ${status}`) : (e.en || e.message || `HTTP ${status}`));
    this.status = status; this.body = body;
  }
}

// fetch() rejects with a TypeError when there is no answer at all (server down, network gone)
export const isOffline = (e) => e instanceof TypeError;

export function takeKeyFromUrl() {
  const m = location.hash.match(/(?:^#|&)key=([^&]*)/);
  if (m) {
    localStorage.setItem(KEY_STORE, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);  // out of the address bar
  }
}

export function authHeaders(headers = {}) {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

// fetch with the key; a 401 asks for the key and tries again (until the writer cancels)
export async function authFetch(path, init = {}) {
  let res = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  for (let tries = 0; res.status === 401 && tries < 5; tries++) {
    const key = prompt(t("apiKeyPrompt"));
    if (!key || !key.trim()) break;
    localStorage.setItem(KEY_STORE, key.trim());
    res = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  }
  return res;
}

export async function api(method, path, body, opts = {}) {
  const init = { method, headers: {}, ...opts };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const res = await authFetch(path, init);
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// a message for any error, in the page's language
export const describe = (e) => (isOffline(e) ? t("genOffline") : t("error") + e.message);
