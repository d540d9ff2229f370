// 设定: the open manuscript's memory, author's note (template, depth), context budget and lorebook,
// kept with it in SQLite (GET/PUT /api/docs/{id}/story). As with the text, every change goes to
// this browser at once and to the server after a short pause; lorebook.js and context.js edit and
// read the same object (STORY.data).
import { api, authHeaders } from "./api.js";
import { $, el } from "./dom.js";
import { t } from "./i18n.js";
import { S } from "./state.js";
import "./story-words.js";

export const DEFAULTS = { memory: "", authors_note: "", an_template: "[Author's note: <|>]", an_depth: 320, scan_depth: 0,
                          context_budget: 0 };
export const ENTRY = { name: "", keys: "", secondary_keys: "", anti_keys: "", selective: false, constant: false, enabled: true,
                       probability: 100, scan_depth: 0, order: 100, budget: 0, content: "" };
const DRAFT = "aiwriter.storyDraft.";
const KEY_FIELDS = ["keys", "secondary_keys", "anti_keys"];

// data: the form being edited (keys as the text typed); saved: JSON of what the server holds
export const STORY = { doc: null, data: null, saved: "", timer: null, saving: null, error: "" };
S.story = STORY;  // tests read it
const listeners = [];
export const onStoryChange = (fn) => listeners.push(fn);

// the server's form (keys as lists) -> the page's (keys as typed text)
export function formOf(story) {
  const s = { ...DEFAULTS, ...(story || {}) };
  s.entries = (s.entries || []).map((e) => {
    const f = { ...ENTRY, ...e };
    for (const k of KEY_FIELDS) if (Array.isArray(f[k])) f[k] = f[k].join(", ");
    return f;
  });
  return s;
}

// Chinese commas separate keys too (not inside a /regex/: the server splits those)
const keyText = (s) => (s.includes("/") ? s : s.replace(/[，、]/g, ","));

// what PUT /story and POST /context take: the server splits the keys
export function payload(data = STORY.data) {
  const p = {};
  for (const k of Object.keys(DEFAULTS)) p[k] = data[k];
  p.entries = data.entries.map((e) => {
    const out = {};
    for (const k of Object.keys(ENTRY)) out[k] = KEY_FIELDS.includes(k) ? keyText(e[k]) : e[k];
    return out;
  });
  return p;
}

// Does the manuscript have anything that changes what the model reads?
export function hasStory(data = STORY.data) {
  return !!data && (!!data.memory.trim() || !!data.authors_note.trim() || data.entries.some((e) => e.enabled && e.content.trim()));
}

export async function loadStory(docId) {
  await flushStory();
  STORY.doc = docId; STORY.error = "";
  let server = null;
  try { server = (await api("GET", `/api/docs/${docId}/story`)).story; } catch (e) { server = null; }
  if (STORY.doc !== docId) return;
  STORY.data = formOf(server);
  STORY.saved = server ? JSON.stringify(payload()) : "";
  // a change that had not reached the server (page closed, server down) is taken up again
  let draft = null;
  try { draft = JSON.parse(localStorage.getItem(DRAFT + docId)); } catch (e) { draft = null; }
  if (draft && JSON.stringify(draft) !== STORY.saved) {
    STORY.data = formOf(draft);
    schedule(0);
  } else localStorage.removeItem(DRAFT + docId);
  renderStory();
  for (const fn of listeners) fn("load");
}

// called after every edit of STORY.data
export function storyChanged(delay = 800) {
  if (!STORY.doc) return;
  const p = JSON.stringify(payload());
  if (p === STORY.saved) localStorage.removeItem(DRAFT + STORY.doc);
  else {
    try { localStorage.setItem(DRAFT + STORY.doc, p); } catch (e) { /* storage full: the server save still runs */ }
    schedule(delay);
  }
  showStoryState();
  for (const fn of listeners) fn("edit");
}

function schedule(delay) {
  clearTimeout(STORY.timer);
  STORY.timer = setTimeout(saveStory, delay);
}

export async function saveStory() {
  clearTimeout(STORY.timer);
  if (!STORY.doc || !STORY.data) return;
  if (STORY.saving) { await STORY.saving.catch(() => {}); return saveStory(); }
  const doc = STORY.doc, body = payload(), text = JSON.stringify(body);
  if (text === STORY.saved) { showStoryState(); return; }
  STORY.saving = api("PUT", `/api/docs/${doc}/story`, { story: body });
  showStoryState();
  try {
    await STORY.saving;
    STORY.saved = text; STORY.error = "";
    if (STORY.doc === doc && JSON.stringify(payload()) === text) localStorage.removeItem(DRAFT + doc);
  } catch (e) {
    // a half-typed /regex/ and the like: the server names the entry; the draft stays
    STORY.error = e.status ? e.message : t("offline");
    if (!e.status) schedule(5000);
  } finally {
    STORY.saving = null;
    showStoryState();
  }
}

// before the page switches manuscripts or exports: what was typed goes to the server first
export async function flushStory() {
  if (STORY.doc && STORY.data && JSON.stringify(payload()) !== STORY.saved) await saveStory();
}

export function showStoryState() {
  if (!STORY.data) return;
  const dirty = JSON.stringify(payload()) !== STORY.saved;
  document.body.dataset.storySaved = dirty || STORY.saving ? "no" : "yes";
  document.body.dataset.storyError = STORY.error ? "yes" : "no";
  const text = STORY.error ? t("storyBad", STORY.error) : STORY.saving ? t("storySaving") : dirty ? t("storyUnsaved") : STORY.saved ? t("storySaved") : "";
  for (const node of document.querySelectorAll(".story-status")) {  // in the 设定 and 设定集 panes
    node.classList.toggle("error", !!STORY.error);
    node.textContent = text;
  }
}

window.addEventListener("beforeunload", () => {
  // the draft is already in localStorage; also try to save on the way out
  if (STORY.doc && STORY.data && JSON.stringify(payload()) !== STORY.saved) {
    fetch(`/api/docs/${STORY.doc}/story`, { method: "PUT", keepalive: true, headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ story: payload() }) }).catch(() => {});
  }
});

// ------------------------------------------------------------------------------ the 设定 pane

// a labelled input bound to data[name]; kind: "text" | "area" | "int" | "check"
export function field(data, name, label, kind, { id = "", min = null, max = null, hint = "", onChange = null, rows = 4 } = {}) {
  const wrap = el("label", kind === "check" ? "check" : "field");
  const span = el("span", "", t(label));
  span.dataset.i18n = label;
  let input;
  if (kind === "area") { input = el("textarea", "story-text"); input.rows = rows; }
  else { input = el("input"); input.type = kind === "int" ? "number" : kind === "check" ? "checkbox" : "text"; }
  if (id) input.id = id;
  input.dataset.field = name;
  if (kind === "int") { input.step = "1"; if (min !== null) input.min = min; if (max !== null) input.max = max; }
  if (kind === "check") input.checked = !!data[name]; else input.value = data[name];
  const read = () => {
    if (kind === "check") data[name] = input.checked;
    else if (kind === "int") {
      const v = Number(input.value);
      if (input.value.trim() === "" || !Number.isFinite(v)) return;
      data[name] = min !== null && v < min ? min : max !== null && v > max ? max : (name === "probability" ? v : Math.round(v));
    } else data[name] = input.value;
    storyChanged();
    if (onChange) onChange();
  };
  input.addEventListener(kind === "check" ? "change" : "input", read);
  if (kind === "check") wrap.append(input, span); else wrap.append(span, input);
  if (hint) { const h = el("small", "help", t(hint)); h.dataset.i18n = hint; wrap.append(h); }
  return wrap;
}

export function renderStory() {
  const pane = $("pane-story");
  if (!pane) return;
  pane.replaceChildren();
  const status = el("p", "hint story-status");
  status.id = "story-status"; status.setAttribute("role", "status");
  if (!STORY.data) { pane.append(status); return; }
  const d = STORY.data;
  const use = el("p", "hint", t("storyUse"));
  pane.append(
    field(d, "memory", "memory", "area", { id: "story-memory", hint: "memoryHint", rows: 6 }),
    field(d, "authors_note", "authorsNote", "area", { id: "story-note", hint: "authorsNoteHint", rows: 3 }),
    field(d, "an_template", "anTemplate", "text", { id: "story-an-template" }),
    field(d, "an_depth", "anDepth", "int", { id: "story-an-depth", min: 0, max: 100000000 }),
    field(d, "context_budget", "contextBudget", "int", { id: "story-budget", min: 0, max: 10000000 }),
    use, status,
  );
  showStoryState();
}
