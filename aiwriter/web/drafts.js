// Drafts in this browser: every change is written here at once, before the server has it.
// Each open page (tab) writes its own draft per manuscript and keeps a heartbeat; a draft whose
// page is gone (closed, crashed, reloaded) is an orphan that the next page open on that
// manuscript takes over: restored and saved if the server's copy has not changed since it was
// made, offered otherwise. A draft is removed only once the server holds its text, or when the
// writer discards it.
import { S } from "./state.js";

const PREFIX = "aiwriter.draft.";
const BEAT = "aiwriter.tab.";
const BEAT_MS = 2000, DEAD_MS = 70000;  // background pages' timers may run once a minute

// other pages of this browser hear of every save (documents.js follows them)
export const tabs = "BroadcastChannel" in window ? new BroadcastChannel("aiwriter") : { postMessage() {}, addEventListener() {} };

const key = (docId, tab = S.tab) => `${PREFIX}${docId}.${tab}`;

export function writeDraft(docId, draft) {
  try {
    localStorage.setItem(key(docId), JSON.stringify({ ...draft, doc: docId, tab: S.tab, time: Date.now() }));
  } catch (e) { /* storage full: the server save still runs */ }
}

export const ownDraft = (docId) => read(key(docId));
export function dropOwnDraft(docId) { localStorage.removeItem(key(docId)); }
export function dropDraft(k) { localStorage.removeItem(k); }

function read(k) {
  try {
    const d = JSON.parse(localStorage.getItem(k));
    return d && typeof d.text === "string" ? d : null;
  } catch (e) { return null; }
}

// This page's own draft becomes an orphan (when the page opens the manuscript anew and must
// decide about it like about any other left-over draft).
export function releaseOwnDraft(docId) {
  const d = localStorage.getItem(key(docId));
  if (d === null) return;
  localStorage.setItem(key(docId, `released-${S.tab}-${Date.now()}`), d);
  localStorage.removeItem(key(docId));
}

// Which pages are alive: each holds a Web Lock named after it for as long as it lives (the
// browser frees it when the page goes, even in a crash). Where Web Locks are missing (a page
// served over plain http to another machine), a heartbeat in localStorage stands in.
async function livePages() {
  if (!navigator.locks) return null;
  const held = (await navigator.locks.query()).held || [];
  return new Set(held.map((l) => l.name).filter((n) => n.startsWith(BEAT)).map((n) => n.slice(BEAT.length)));
}

function alive(tab, live) {
  if (tab === S.tab) return true;
  if (live) return live.has(tab);
  const beat = Number(localStorage.getItem(BEAT + tab));
  return beat > 0 && Date.now() - beat < DEAD_MS;
}

// Drafts of this manuscript whose page is gone, newest first: [{key, draft}]
export async function orphanDrafts(docId) {
  const live = await livePages().catch(() => null);
  const out = [];
  for (let i = 0; i < localStorage.length; i++) {
    const k = localStorage.key(i);
    if (!k || !k.startsWith(PREFIX)) continue;
    const rest = k.slice(PREFIX.length);
    const dot = rest.indexOf(".");
    const doc = Number(dot < 0 ? rest : rest.slice(0, dot));  // "aiwriter.draft.<id>": older pages' single draft
    const tab = dot < 0 ? "" : rest.slice(dot + 1);
    if (doc !== docId || (tab && alive(tab, live))) continue;
    const draft = read(k);
    if (draft) out.push({ key: k, draft });
    else localStorage.removeItem(k);
  }
  return out.sort((a, b) => (b.draft.time || 0) - (a.draft.time || 0));
}

export function startHeartbeat() {
  if (navigator.locks) navigator.locks.request(BEAT + S.tab, () => new Promise(() => {})).catch(() => {});
  const beat = () => { try { localStorage.setItem(BEAT + S.tab, String(Date.now())); } catch (e) { /* full */ } };
  beat();
  setInterval(beat, BEAT_MS);
  // leaving (closing, reloading): other pages may take over this page's drafts at once
  window.addEventListener("pagehide", () => localStorage.removeItem(BEAT + S.tab));
  window.addEventListener("pageshow", (e) => { if (e.persisted) beat(); });
  // heartbeats of pages long gone
  for (let i = localStorage.length - 1; i >= 0; i--) {
    const k = localStorage.key(i);
    if (k && k.startsWith(BEAT) && Date.now() - Number(localStorage.getItem(k)) > 24 * 3600e3) localStorage.removeItem(k);
  }
}
