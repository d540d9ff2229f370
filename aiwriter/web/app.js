// AI-Writer's writing page. Plain JS, no build step. It talks to the same APIs as any client:
// /v1/completions (streamed) for writing, /api/docs for manuscripts.
// Safety of the manuscript: every change goes to localStorage at once and to the server after a
// short pause; the browser copy is dropped only when the server confirms that exact text.
"use strict";

const $ = (id) => document.getElementById(id);
const editor = $("editor");

// ----------------------------------------------------------------------------- words

const WORDS = {
  zh: {
    documents: "文稿", new: "新建", rename: "重命名", delete: "删除", export: "导出 .txt", versions: "版本历史",
    titlePlaceholder: "文稿标题", editorPlaceholder: "在这里写下开头，然后按「续写」（Alt+Q）。",
    continue: "续写", stop: "停止", rewrite: "换个写法", undo: "撤销", redo: "重做", undoKey: "Ctrl+Z", redoKey: "Ctrl+Shift+Z",
    length: "字数", candidates: "候选", settingsHistory: "设置 · 记录", settings: "设置", history: "生成记录",
    model: "模型", preset: "预设", presetSave: "存为预设", presetDelete: "删除预设", seed: "随机种子（空 = 随机）",
    stopAt: "遇到这些文字就停（用 | 分隔）", historyHint: "每次生成的文字都记在这里，点开看全文。",
    restore: "恢复这个版本", close: "关闭", earlier: "上一次", later: "下一次",
    temperature: "温度", top_p: "top-p", top_p_newline: "换行后的 top-p", allow_p: "总保留概率 ≥", top_k: "top-k（0 关）",
    repetition_penalty: "重复惩罚（2022 网页版）", presence_penalty: "出现惩罚", frequency_penalty: "频率惩罚",
    chars: (n) => `${n} 字`, saved: () => "已保存 ", saving: "保存中…", unsaved: "未保存（已暂存在浏览器）",
    offline: "连不上服务器：文字已暂存在浏览器，稍后自动重试", waiting: "等待服务器…",
    writing: (n, total, speed) => `正在写… ${n}/${total} 字${speed ? ` · ${speed} 字/秒` : ""}`,
    done: (n, s) => `写了 ${n} 字，用时 ${s} 秒`, stopped: (n) => `已停止，保留了 ${n} 字`,
    emptyOpening: "先写一个开头。", nothingToRewrite: "最后一段续写已经改动过了，这次按续写处理。",
    round: (i, n) => `第 ${i}/${n} 次`, pick: "选这个", picked: "已选", cand: (i) => `候选 ${i}`,
    busy: (s) => `服务器忙，请 ${s} 秒后再试`, confirmDelete: (t) => `删除「${t}」？它的版本历史也会一起删除，无法恢复。`,
    renamePrompt: "新的标题：", presetName: "预设名称：", untitled: "未命名文稿",
    draftFound: (t) => `浏览器里有一份未保存的稿子（${t}），和服务器上的不一样。`, useDraft: "用浏览器里的", dropDraft: "丢弃",
    conflict: "这篇文稿在别处（另一个标签页？）被修改过了。", keepMine: "用我的覆盖", loadTheirs: "载入服务器上的",
    reasons: { create: "新建", autosave: "自动保存", save: "保存", generation: "生成后", restore: "恢复" },
    append: "追加到文末", copy: "复制", presets: { seed: "种子默认", steady: "稳妥", bold: "奔放", browser2022: "2022 网页版" },
    loadFailed: "读取失败：", error: "出错了：", apiKeyPrompt: "这个服务器需要 API 密钥（启动时的 --api-key）：",
    saveFailed: (m) => `保存失败：${m}。文字仍暂存在浏览器里，稍后自动重试。`,
  },
  en: {
    documents: "Manuscripts", new: "New", rename: "Rename", delete: "Delete", export: "Export .txt", versions: "Versions",
    titlePlaceholder: "Title", editorPlaceholder: "Write an opening here, then press Continue (Alt+Q).",
    continue: "Continue", stop: "Stop", rewrite: "Rewrite", undo: "Undo", redo: "Redo", undoKey: "Ctrl+Z", redoKey: "Ctrl+Shift+Z",
    length: "Chars", candidates: "Candidates", settingsHistory: "Settings · Log", settings: "Settings", history: "Log",
    model: "Model", preset: "Preset", presetSave: "Save preset", presetDelete: "Delete preset", seed: "Seed (empty = random)",
    stopAt: "Stop at (separate with |)", historyHint: "Every generation is logged here; click one to read it all.",
    restore: "Restore this version", close: "Close", earlier: "Earlier", later: "Later",
    temperature: "Temperature", top_p: "top-p", top_p_newline: "top-p after newline", allow_p: "Always keep prob ≥", top_k: "top-k (0 off)",
    repetition_penalty: "Repetition penalty (2022)", presence_penalty: "Presence penalty", frequency_penalty: "Frequency penalty",
    chars: (n) => `${n} chars`, saved: () => "Saved ", saving: "Saving…", unsaved: "Not saved (kept in this browser)",
    offline: "Cannot reach the server: the text is kept in this browser; retrying", waiting: "Waiting for the server…",
    writing: (n, total, speed) => `Writing… ${n}/${total}${speed ? ` · ${speed} chars/s` : ""}`,
    done: (n, s) => `Wrote ${n} chars in ${s} s`, stopped: (n) => `Stopped; kept ${n} chars`,
    emptyOpening: "Write an opening first.", nothingToRewrite: "The last continuation was edited; continuing instead.",
    round: (i, n) => `Try ${i}/${n}`, pick: "Pick", picked: "Picked", cand: (i) => `Candidate ${i}`,
    busy: (s) => `The server is busy; retry in ${s} s`, confirmDelete: (t) => `Delete “${t}” and its versions? This cannot be undone.`,
    renamePrompt: "New title:", presetName: "Preset name:", untitled: "Untitled",
    draftFound: (t) => `This browser holds unsaved text (${t}) that differs from the server's.`, useDraft: "Use the browser's", dropDraft: "Discard",
    conflict: "This manuscript was changed elsewhere (another tab?).", keepMine: "Keep mine", loadTheirs: "Load the server's",
    reasons: { create: "created", autosave: "autosave", save: "saved", generation: "after writing", restore: "restored" },
    append: "Append", copy: "Copy", presets: { seed: "Seed defaults", steady: "Steady", bold: "Bold", browser2022: "2022 browser" },
    loadFailed: "Could not load: ", error: "Error: ", apiKeyPrompt: "This server requires its API key (--api-key):",
    saveFailed: (m) => `Not saved: ${m}. The text is kept in this browser; retrying.`,
  },
};
let lang = localStorage.getItem("aiwriter.lang") || "zh";
const t = (key, ...args) => { const w = WORDS[lang][key]; return typeof w === "function" ? w(...args) : w; };

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  $("btn-lang").textContent = lang === "zh" ? "EN" : "中文";
  renderSampling(); renderPresets(); renderCandidates(); renderHistory(); renderVersions(); updateCount(); showSaveState();
  $("gen-status").textContent = "";
  if (S.doc) refreshDocList();
}

// ----------------------------------------------------------------------------- state

const S = {
  config: null,
  doc: null,              // {id, title, revision} of the open manuscript
  savedText: "",          // the text the server confirmed last
  dirty: false, saving: null, saveTimer: null, retryTimer: null, savedAt: null, offline: false,
  gen: null,              // the running generation
  last: null,             // {base, text}: the continuation at the end of the editor
  rounds: [], round: -1,  // every set of candidates, for the retry history
  undo: [], redo: [], lastTyping: 0,
  versions: [], generations: [],
  trace: [],              // [time, length] after each streamed piece (tests read it)
  saveRetryMs: 10000,     // after a failed save (disk full): try again this much later
};
window.AIWriter = S;

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(lang === "zh" ? (e.zh || e.message || `HTTP ${status}`) : (e.en || e.message || `HTTP ${status}`));
    this.status = status; this.body = body;
  }
}

// ----------------------------------------------------------------------------- API key
// A server started with --api-key wants it on every API call. It arrives once in the URL's
// fragment (#key=..., never sent over the network) or is asked for, and is kept in this browser.

const KEY_STORE = "aiwriter.apiKey";
(() => {
  const m = location.hash.match(/(?:^#|&)key=([^&]*)/);
  if (m) {
    localStorage.setItem(KEY_STORE, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);  // out of the address bar
  }
})();

function authHeaders(headers = {}) {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

// fetch with the key; a 401 asks for the key and tries again (until the writer cancels)
async function authFetch(path, init = {}) {
  let res = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  for (let tries = 0; res.status === 401 && tries < 5; tries++) {
    const key = prompt(t("apiKeyPrompt"));
    if (!key || !key.trim()) break;
    localStorage.setItem(KEY_STORE, key.trim());
    res = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  }
  return res;
}

async function api(method, path, body, opts = {}) {
  const init = { method, headers: {}, ...opts };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const res = await authFetch(path, init);
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

function banner(html, kind = "", buttons = []) {
  const b = $("banner");
  b.className = "banner " + kind;
  b.replaceChildren();
  const span = document.createElement("span");
  span.textContent = html;
  b.append(span);
  for (const [label, fn] of buttons) {
    const btn = document.createElement("button");
    btn.type = "button"; btn.textContent = label;
    btn.onclick = () => { b.hidden = true; fn(); };
    b.append(btn);
  }
  const x = document.createElement("button");
  x.type = "button"; x.className = "icon"; x.textContent = "×"; x.onclick = () => { b.hidden = true; };
  b.append(x);
  b.hidden = false;
}

const clock = (ts) => new Date(ts * 1000).toLocaleString(lang === "zh" ? "zh-CN" : "en", { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
const countChars = (s) => s.replace(/\s/g, "").length;

// ----------------------------------------------------------------------------- editor, undo

function updateCount() { $("char-count").textContent = t("chars", countChars(editor.value)); }

function pushUndo(text = editor.value) {
  if (S.undo.length && S.undo[S.undo.length - 1] === text) return;
  S.undo.push(text);
  if (S.undo.length > 200) S.undo.shift();
  S.redo = [];
  updateUndoButtons();
}

function updateUndoButtons() {
  $("btn-undo").disabled = !S.undo.length || !!S.gen;
  $("btn-redo").disabled = !S.redo.length || !!S.gen;
}

function setText(text, { keepScroll = false } = {}) {
  const top = editor.scrollTop;
  editor.value = text;
  if (keepScroll) editor.scrollTop = top; else editor.scrollTop = editor.scrollHeight;
  changed();
}

function undo() {
  if (S.gen || !S.undo.length) return;
  S.redo.push(editor.value);
  setText(S.undo.pop(), { keepScroll: true });
  updateUndoButtons();
}

function redo() {
  if (S.gen || !S.redo.length) return;
  S.undo.push(editor.value);
  setText(S.redo.pop(), { keepScroll: true });
  updateUndoButtons();
}

editor.addEventListener("beforeinput", () => {
  // a pause of a second starts a new undo step while typing
  if (Date.now() - S.lastTyping > 1000) pushUndo();
  S.lastTyping = Date.now();
});
editor.addEventListener("input", changed);

// ----------------------------------------------------------------------------- saving

const draftKey = (id) => `aiwriter.draft.${id}`;

function changed() {
  updateCount();
  if (!S.doc) return;
  if (editor.value === S.savedText && $("title").value === S.doc.title) {
    S.dirty = false; localStorage.removeItem(draftKey(S.doc.id)); showSaveState(); return;
  }
  S.dirty = true;
  writeDraft();
  showSaveState();
  clearTimeout(S.saveTimer);
  S.saveTimer = setTimeout(() => save("autosave"), 1200);
}

function writeDraft() {
  try {
    localStorage.setItem(draftKey(S.doc.id), JSON.stringify({ text: editor.value, title: $("title").value, revision: S.doc.revision, time: Date.now() }));
  } catch (e) { /* storage full: the server save still runs */ }
}

function showSaveState() {
  const el = $("save-status");
  document.body.dataset.saved = S.dirty || S.saving ? "no" : "yes";
  if (S.offline) el.textContent = t("offline");
  else if (S.saving) el.textContent = t("saving");
  else if (S.dirty) el.textContent = t("unsaved");
  else {
    // "Saved" always; the time only where there is room (style.css hides .time on phones)
    el.textContent = S.savedAt ? t("saved", "") : "";
    if (S.savedAt) {
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = new Date(S.savedAt).toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB");
      el.append(time);
    }
  }
}

async function save(reason = "autosave", force = false) {
  clearTimeout(S.saveTimer);
  if (!S.doc || (!S.dirty && !force)) return;
  if (S.saving) { await S.saving.catch(() => {}); return save(reason, force); }
  const doc = S.doc, text = editor.value, title = $("title").value.trim() || doc.title;
  const body = { text, title, reason };
  if (!force) body.revision = doc.revision;
  S.saving = api("PUT", `/api/docs/${doc.id}`, body);
  showSaveState();
  try {
    const res = await S.saving;
    if (S.doc !== doc) return;
    S.offline = false;
    delete document.body.dataset.saveError;
    doc.revision = res.revision; doc.title = res.title; S.savedText = res.text; S.savedAt = Date.now();
    if (editor.value === res.text && ($("title").value.trim() || doc.title) === res.title) {
      S.dirty = false;
      localStorage.removeItem(draftKey(doc.id));
    } else {
      writeDraft();  // typed while saving: the draft now builds on the new revision
    }
    refreshDocList();
    loadVersions();
  } catch (e) {
    if (e.status === 409) {
      banner(t("conflict"), "error", [[t("keepMine"), () => save("save", true)], [t("loadTheirs"), () => openDoc(doc.id, { discardDraft: true })]]);
    } else if (e instanceof ApiError && e.status >= 500) {
      // disk full, database unwritable: the draft stays in localStorage; say so and retry
      document.body.dataset.saveError = String(e.status);
      banner(t("saveFailed", e.message), "error");
      clearTimeout(S.retryTimer);
      S.retryTimer = setTimeout(() => save(reason), S.saveRetryMs);
    } else if (e instanceof ApiError) {
      banner(t("error") + e.message, "error");
    } else {
      S.offline = true;
      clearTimeout(S.retryTimer);
      S.retryTimer = setTimeout(() => save(reason), 5000);
    }
  } finally {
    S.saving = null;
    showSaveState();
  }
}

window.addEventListener("beforeunload", () => {
  // the draft is already in localStorage; also try to save on the way out
  if (S.dirty && S.doc) {
    fetch(`/api/docs/${S.doc.id}`, { method: "PUT", keepalive: true, headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ text: editor.value, revision: S.doc.revision, reason: "autosave" }) }).catch(() => {});
  }
});

// ----------------------------------------------------------------------------- documents

async function refreshDocList() {
  let docs;
  try { docs = (await api("GET", "/api/docs")).documents; } catch (e) { return; }
  const ul = $("doc-list");
  ul.replaceChildren();
  for (const d of docs) {
    const li = document.createElement("li");
    li.dataset.id = d.id;
    li.className = S.doc && d.id === S.doc.id ? "current" : "";
    li.textContent = d.title;
    const small = document.createElement("small");
    small.textContent = `${t("chars", d.chars)} · ${clock(d.updated)}`;
    li.append(small);
    li.onclick = () => { closeDrawers(); openDoc(d.id); };
    ul.append(li);
  }
  return docs;
}

async function openDoc(id, { discardDraft = false } = {}) {
  if (S.gen) stopGeneration();
  if (S.doc && S.dirty && S.doc.id !== id) await save("autosave");
  let doc;
  try { doc = await api("GET", `/api/docs/${id}`); } catch (e) { banner(t("loadFailed") + e.message, "error"); return false; }
  S.doc = { id: doc.id, title: doc.title, revision: doc.revision };
  S.savedText = doc.text; S.dirty = false; S.savedAt = doc.updated * 1000; S.offline = false;
  S.undo = []; S.redo = []; S.last = null; S.rounds = []; S.round = -1;
  $("title").value = doc.title;
  $("btn-export").href = `/api/docs/${doc.id}/export`;
  localStorage.setItem("aiwriter.lastDoc", String(doc.id));
  setText(doc.text);
  $("banner").hidden = true;
  const raw = discardDraft ? null : localStorage.getItem(draftKey(doc.id));
  if (discardDraft) localStorage.removeItem(draftKey(doc.id));
  if (raw) {
    const draft = JSON.parse(raw);
    if (draft.text !== doc.text) {
      if (draft.revision === doc.revision) {
        // the server never got these edits (tab closed, server down): put them back and save
        pushUndo(doc.text);
        setText(draft.text);
      } else {
        banner(t("draftFound", new Date(draft.time).toLocaleString()), "", [
          [t("useDraft"), () => { pushUndo(); setText(draft.text); }],
          [t("dropDraft"), () => localStorage.removeItem(draftKey(doc.id))],
        ]);
      }
    } else {
      localStorage.removeItem(draftKey(doc.id));
    }
  }
  updateUndoButtons(); renderCandidates(); showSaveState();
  await Promise.all([refreshDocList(), loadVersions(), loadGenerations()]);
  return true;
}

async function newDoc() {
  const doc = await api("POST", "/api/docs", { title: t("untitled") });
  await openDoc(doc.id);
  editor.focus();
}

$("btn-export").addEventListener("click", async (e) => {
  // a plain link cannot carry the API key: fetch the file and hand it over as a download
  if (!localStorage.getItem(KEY_STORE) || !S.doc) return;
  e.preventDefault();
  try {
    const res = await authFetch(`/api/docs/${S.doc.id}/export`);
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await res.blob());
    a.download = `${S.doc.title || "manuscript"}.txt`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (err) { banner(t("error") + err.message, "error"); }
});

$("btn-new").onclick = () => { closeDrawers(); newDoc().catch((e) => banner(t("error") + e.message, "error")); };
$("btn-rename").onclick = () => {
  const title = prompt(t("renamePrompt"), $("title").value);
  if (title && title.trim()) { $("title").value = title.trim(); changed(); save("save"); }
};
$("title").addEventListener("change", () => { if (!$("title").value.trim()) $("title").value = S.doc.title; changed(); save("save"); });
$("btn-delete").onclick = async () => {
  if (!S.doc || !confirm(t("confirmDelete", S.doc.title))) return;
  const id = S.doc.id;
  try { await api("DELETE", `/api/docs/${id}`); } catch (e) { banner(t("error") + e.message, "error"); return; }
  localStorage.removeItem(draftKey(id));
  S.doc = null; S.dirty = false;
  const docs = await refreshDocList();
  if (docs && docs.length) await openDoc(docs[0].id); else await newDoc();
};

// ----------------------------------------------------------------------------- versions

async function loadVersions() {
  if (!S.doc) return;
  try { S.versions = (await api("GET", `/api/docs/${S.doc.id}/versions`)).versions; } catch (e) { S.versions = []; }
  renderVersions();
}

function renderVersions() {
  const ul = $("version-list");
  ul.replaceChildren();
  for (const v of S.versions) {
    const li = document.createElement("li");
    li.textContent = `${clock(v.updated)} · ${t("reasons")[v.reason] || v.reason}`;
    const small = document.createElement("small");
    small.textContent = `${t("chars", v.chars)} · …${v.tail.slice(-16)}`;
    li.append(small);
    li.onclick = () => showVersion(v.id);
    ul.append(li);
  }
}

async function showVersion(vid) {
  const v = await api("GET", `/api/docs/${S.doc.id}/versions/${vid}`);
  $("version-title").textContent = `${clock(v.updated)} · ${t("reasons")[v.reason] || v.reason} · ${t("chars", countChars(v.text))}`;
  $("version-text").value = v.text;
  $("version-restore").onclick = async () => {
    await save("autosave");
    const doc = await api("POST", `/api/docs/${S.doc.id}/versions/${vid}/restore`);
    pushUndo();
    S.doc.revision = doc.revision; S.savedText = doc.text;
    setText(doc.text);
    $("version-dialog").close();
    loadVersions();
  };
  $("version-dialog").showModal();
}

// ----------------------------------------------------------------------------- settings, presets

const SAMPLING = [
  // [name, min, max, step]
  ["temperature", 0.1, 2, 0.05], ["top_p", 0, 1, 0.01], ["top_p_newline", 0, 1, 0.01], ["allow_p", 0, 0.1, 0.001],
  ["top_k", 0, 200, 1], ["repetition_penalty", 0, 3, 0.1], ["presence_penalty", 0, 2, 0.05], ["frequency_penalty", 0, 2, 0.05],
];
const BUILTIN_PRESETS = {
  seed: {},  // the server's defaults: the seed's top_p 0.75, top_p_newline 0.9, temperature 1.0
  steady: { top_p: 0.6, top_p_newline: 0.8, temperature: 0.9 },
  bold: { top_p: 0.9, top_p_newline: 0.95, temperature: 1.1 },
  browser2022: { allow_p: 0.01 },
};
let sampling = {};

function defaults() {
  const d = S.config ? S.config.defaults : {};
  return Object.fromEntries(SAMPLING.filter(([name]) => name in d).map(([name]) => [name, d[name]]));
}

function loadSampling() {
  sampling = { ...defaults(), ...JSON.parse(localStorage.getItem("aiwriter.sampling") || "{}") };
}

function storeSampling() { localStorage.setItem("aiwriter.sampling", JSON.stringify(sampling)); }

function renderSampling() {
  const box = $("sampling");
  box.replaceChildren();
  for (const [name, min, max, step] of SAMPLING) {
    const label = document.createElement("label");
    label.className = "field";
    const span = document.createElement("span");
    span.textContent = t(name);
    const num = document.createElement("input");
    Object.assign(num, { type: "number", min, max, step, value: sampling[name] ?? "" });
    num.id = `s-${name}`;
    const range = document.createElement("input");
    Object.assign(range, { type: "range", min, max, step, value: sampling[name] ?? min });
    const set = (v) => {
      const x = Number(v);
      if (v === "" || !Number.isFinite(x)) return;
      sampling[name] = x; num.value = x; range.value = x; storeSampling(); $("preset").value = "";
    };
    num.onchange = () => set(num.value);
    range.oninput = () => set(range.value);
    label.append(span, num, range);
    box.append(label);
  }
}

function userPresets() { return JSON.parse(localStorage.getItem("aiwriter.presets") || "{}"); }

function renderPresets() {
  const sel = $("preset");
  const current = sel.value;
  sel.replaceChildren(new Option("—", ""));
  for (const key of Object.keys(BUILTIN_PRESETS)) sel.append(new Option(t("presets")[key], `builtin:${key}`));
  for (const name of Object.keys(userPresets())) sel.append(new Option(name, `user:${name}`));
  sel.value = current;
}

$("preset").onchange = () => {
  const v = $("preset").value;
  if (!v) return;
  const [kind, name] = [v.slice(0, v.indexOf(":")), v.slice(v.indexOf(":") + 1)];
  const values = kind === "builtin" ? BUILTIN_PRESETS[name] : userPresets()[name];
  sampling = { ...defaults(), ...values };
  storeSampling(); renderSampling();
  $("preset").value = v;
};
$("preset-save").onclick = () => {
  const name = prompt(t("presetName"));
  if (!name || !name.trim()) return;
  const all = userPresets();
  all[name.trim()] = { ...sampling };
  localStorage.setItem("aiwriter.presets", JSON.stringify(all));
  renderPresets(); $("preset").value = `user:${name.trim()}`;
};
$("preset-delete").onclick = () => {
  const v = $("preset").value;
  if (!v.startsWith("user:")) return;
  const all = userPresets();
  delete all[v.slice(5)];
  localStorage.setItem("aiwriter.presets", JSON.stringify(all));
  $("preset").value = ""; renderPresets();
};

async function loadModels() {
  const data = await api("GET", "/v1/models");
  const sel = $("model");
  const saved = localStorage.getItem("aiwriter.model");
  sel.replaceChildren();
  for (const m of data.data) sel.append(new Option(m.id, m.id));
  const loaded = data.data.find((m) => m.loaded);
  sel.value = data.data.some((m) => m.id === saved) ? saved : (loaded ? loaded.id : data.data[0].id);
}
$("model").onchange = () => localStorage.setItem("aiwriter.model", $("model").value);

for (const id of ["length", "n", "seed", "stop-strings"]) {
  const el = $(id);
  const key = `aiwriter.${id}`;
  if (localStorage.getItem(key) !== null) el.value = localStorage.getItem(key);
  el.addEventListener("change", () => localStorage.setItem(key, el.value));
}

function requestBody(prompt, n) {
  const length = Math.max(1, Math.min(Number($("length").value) || 200, S.config ? S.config.max_length : 10000));
  const body = { prompt, max_tokens: length, n, stream: true, model: $("model").value };
  for (const [name] of SAMPLING) if (sampling[name] !== undefined) body[name] = sampling[name];
  const seed = $("seed").value.trim();
  if (seed !== "" && Number.isInteger(Number(seed))) body.seed = Number(seed);
  const stops = $("stop-strings").value.split("|").filter((s) => s);
  if (stops.length) body.stop = stops;
  return body;
}

// ----------------------------------------------------------------------------- writing

function setGenerating(on) {
  document.body.dataset.gen = on ? "running" : "idle";
  $("btn-continue").disabled = on; $("btn-rewrite").disabled = on; $("btn-stop").disabled = !on;
  editor.readOnly = on;
  updateUndoButtons();
}

async function generate(mode) {
  if (S.gen || !S.doc) return;
  let base = editor.value;
  if (mode === "rewrite") {
    if (S.last && editor.value === S.last.base + S.last.text) base = S.last.base;
    else if (S.last) banner(t("nothingToRewrite"));
  }
  if (!base.trim()) { banner(t("emptyOpening")); editor.focus(); return; }
  const n = Math.max(1, Math.min(Number($("n").value) || 1, S.config ? S.config.max_n : 8));
  const body = requestBody(base, n);
  pushUndo();
  const inline = n === 1;  // one continuation streams straight into the manuscript
  if (inline && base !== editor.value) setText(base);
  const round = { base, texts: Array(n).fill(""), picked: inline ? 0 : -1, done: false, model: body.model, settings: body };
  S.rounds.push(round); S.round = S.rounds.length - 1;
  const gen = { controller: new AbortController(), round, inline, t0: performance.now(), chars: 0, total: body.max_tokens };
  S.gen = gen; S.trace = [];
  setGenerating(true);
  $("gen-status").textContent = t("waiting");
  renderCandidates();
  let error = null;
  try {
    const res = await authFetch("/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: gen.controller.signal });
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      if (res.status === 429) throw new Error(t("busy", res.headers.get("Retry-After") || "?"));
      throw new ApiError(res.status, data);
    }
    gen.t0 = performance.now();
    await readEvents(res.body, (data) => {
      if (data.error) throw new ApiError(data.error.code || 500, data);
      for (const c of data.choices) if (c.text) onPiece(gen, c.index, c.text);
    });
  } catch (e) {
    if (e.name !== "AbortError") error = e;
  }
  finishGeneration(gen, error);
}

async function readEvents(stream, onData) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        onData(JSON.parse(payload));
      }
    }
  }
}

function onPiece(gen, index, text) {
  gen.round.texts[index] += text;
  gen.chars += text.length;
  if (gen.inline) {
    const atEnd = editor.scrollTop + editor.clientHeight >= editor.scrollHeight - 40;
    editor.value += text;
    if (atEnd) editor.scrollTop = editor.scrollHeight;
    updateCount();
    S.trace.push([performance.now(), editor.value.length]);
  } else {
    const el = document.querySelector(`#cand-list .cand[data-index="${index}"] .text`);
    if (el) { el.textContent += text; el.scrollTop = el.scrollHeight; }
    S.trace.push([performance.now(), gen.round.texts[index].length]);
  }
  const secs = (performance.now() - gen.t0) / 1000;
  const most = Math.max(...gen.round.texts.map((s) => s.length));
  $("gen-status").textContent = t("writing", most, gen.total, secs > 0.5 ? Math.round(gen.chars / secs) : 0);
}

function finishGeneration(gen, error) {
  const round = gen.round;
  round.done = true;
  S.gen = null;
  setGenerating(false);
  const secs = ((performance.now() - gen.t0) / 1000).toFixed(1);
  const most = Math.max(...round.texts.map((s) => s.length));
  if (error) {
    $("gen-status").textContent = "";
    banner(t("error") + error.message, "error");
  } else {
    $("gen-status").textContent = gen.controller.signal.aborted ? t("stopped", most) : t("done", most, secs);
  }
  if (gen.inline) {
    S.last = { base: round.base, text: round.texts[0] };
    changed();
    if (round.texts[0]) save("generation");
  }
  logGenerations(round);
  renderCandidates();
  editor.focus();
}

function stopGeneration() { if (S.gen) S.gen.controller.abort(); }

function pick(roundIndex, i) {
  if (S.gen) return;
  const round = S.rounds[roundIndex];
  pushUndo();
  round.picked = i;
  S.last = { base: round.base, text: round.texts[i] };
  setText(round.base + round.texts[i]);
  save("generation");
  renderCandidates();
}

async function logGenerations(round) {
  if (!S.doc) return;
  const docId = S.doc.id;
  const settings = { ...round.settings };
  delete settings.prompt; delete settings.stream; delete settings.stop;
  for (const text of round.texts) {
    if (!text) continue;
    try {
      const g = await api("POST", `/api/docs/${docId}/generations`, { text, model: round.model, settings });
      if (S.doc && S.doc.id === docId) { S.generations.unshift(g); renderHistory(); }
    } catch (e) { /* the log is a convenience; the manuscript is saved separately */ }
  }
}

function renderCandidates() {
  const box = $("candidates");
  const round = S.rounds[S.round];
  // one continuation written inline needs no panel until there is an earlier try to go back to
  if (!round || (S.rounds.length < 2 && round.texts.length === 1)) { box.hidden = true; return; }
  box.hidden = false;
  $("round-label").textContent = t("round", S.round + 1, S.rounds.length);
  $("round-prev").disabled = S.round <= 0;
  $("round-next").disabled = S.round >= S.rounds.length - 1;
  const list = $("cand-list");
  list.replaceChildren();
  round.texts.forEach((text, i) => {
    const card = document.createElement("div");
    card.className = "cand" + (round.picked === i ? " picked" : "");
    card.dataset.index = i;
    const meta = document.createElement("div");
    meta.className = "meta";
    const label = document.createElement("span");
    label.textContent = `${t("cand", i + 1)} · ${t("chars", countChars(text))}`;
    const btn = document.createElement("button");
    btn.type = "button"; btn.className = "pick";
    btn.textContent = round.picked === i ? t("picked") : t("pick");
    btn.disabled = !round.done || !!S.gen;
    btn.onclick = () => pick(S.rounds.indexOf(round), i);
    meta.append(label, btn);
    const body = document.createElement("div");
    body.className = "text"; body.textContent = text;
    card.append(meta, body);
    list.append(card);
  });
}

$("round-prev").onclick = () => { if (S.round > 0) { S.round--; renderCandidates(); } };
$("round-next").onclick = () => { if (S.round < S.rounds.length - 1) { S.round++; renderCandidates(); } };
$("cand-close").onclick = () => { $("candidates").hidden = true; };

// ----------------------------------------------------------------------------- generation log

async function loadGenerations() {
  if (!S.doc) return;
  try { S.generations = (await api("GET", `/api/docs/${S.doc.id}/generations`)).generations; } catch (e) { S.generations = []; }
  renderHistory();
}

function renderHistory() {
  const ol = $("history-list");
  ol.replaceChildren();
  for (const g of S.generations) {
    const li = document.createElement("li");
    const meta = document.createElement("div");
    meta.className = "meta";
    const info = document.createElement("span");
    const s = g.settings || {};
    info.textContent = `${clock(g.created)} · ${g.model} · ${t("chars", countChars(g.text))} · T${s.temperature ?? "-"} p${s.top_p ?? "-"}`;
    const add = document.createElement("button");
    add.type = "button"; add.textContent = t("append");
    add.onclick = () => { if (S.gen) return; pushUndo(); setText(editor.value + g.text); };
    const copy = document.createElement("button");
    copy.type = "button"; copy.textContent = t("copy");
    copy.onclick = () => navigator.clipboard && navigator.clipboard.writeText(g.text);
    const tools = document.createElement("span");
    tools.append(add, copy);
    meta.append(info, tools);
    const text = document.createElement("div");
    text.className = "text"; text.textContent = g.text;
    text.onclick = () => li.classList.toggle("open");
    li.append(meta, text);
    ol.append(li);
  }
}

// ----------------------------------------------------------------------------- layout, keys

function closeDrawers() { $("docs-panel").classList.remove("open"); $("side-panel").classList.remove("open"); }
const narrow = () => window.matchMedia("(max-width: 900px)").matches;
$("btn-docs").onclick = () => { $("side-panel").classList.remove("open"); $("docs-panel").classList.toggle("open"); };
$("btn-side").onclick = () => { $("docs-panel").classList.remove("open"); $("side-panel").classList.toggle("open"); };
editor.addEventListener("focus", () => { if (narrow()) closeDrawers(); });
for (const tab of document.querySelectorAll(".tab")) {
  tab.onclick = () => {
    for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
    $("pane-settings").hidden = tab.dataset.tab !== "settings";
    $("pane-history").hidden = tab.dataset.tab !== "history";
  };
}
$("btn-lang").onclick = () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("aiwriter.lang", lang); applyLang(); };
$("btn-continue").onclick = () => generate("continue");
$("btn-rewrite").onclick = () => generate("rewrite");
$("btn-stop").onclick = stopGeneration;
$("btn-undo").onclick = undo;
$("btn-redo").onclick = redo;

document.addEventListener("keydown", (e) => {
  if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyQ") { e.preventDefault(); generate("continue"); }
  else if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyE") { e.preventDefault(); generate("rewrite"); }
  else if (e.key === "Escape" && S.gen) { e.preventDefault(); stopGeneration(); }
  else if ((e.ctrlKey || e.metaKey) && !e.altKey && e.target === editor) {
    const k = e.key.toLowerCase();
    if (k === "z" && !e.shiftKey) { e.preventDefault(); undo(); }
    else if ((k === "z" && e.shiftKey) || k === "y") { e.preventDefault(); redo(); }
    else if (k === "s") { e.preventDefault(); save("save"); }
  }
});

// ----------------------------------------------------------------------------- start

async function start() {
  try {
    S.config = await api("GET", "/api/config");
  } catch (e) {
    banner(t("loadFailed") + e.message, "error");
    return;
  }
  loadSampling();
  if (S.config.max_n) $("n").max = S.config.max_n;
  applyLang();
  await loadModels().catch(() => {});
  const docs = (await refreshDocList()) || [];
  const last = Number(localStorage.getItem("aiwriter.lastDoc"));
  const target = docs.find((d) => d.id === last) || docs[0];
  if (target) await openDoc(target.id); else await newDoc();
  document.body.dataset.ready = "yes";
}

start();
