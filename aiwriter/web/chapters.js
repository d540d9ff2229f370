// 章节 / Chapters: the chapters of the open manuscript are its heading lines (第一章 …, 第12回 …,
// 楔子, Chapter 3 …), as the server finds them (aiwriter/story/chapters.py, book.py). The list is
// read from the editor's text as it changes (headings typed by hand count at once); clicking one
// moves the cursor there. Adding, renaming, moving and deleting go through the server's chapter
// API with base_revision, after the editor's unsaved text is saved, and with the editor held
// still meanwhile (S.busy: no typing, no generation), so no edit is lost on either side. Every
// change is a version of its own: 撤销 (Ctrl+Z) or the version history brings it back.
import { api, ApiError, authFetch } from "./api.js";
import { $, banner, editor, el } from "./dom.js";
import { tabs } from "./drafts.js";
import { loadVersions, openDoc, refreshDocList } from "./documents.js";
import { pushUndo, setText } from "./editor.js";
import { addWords, t } from "./i18n.js";
import { closeDrawers } from "./layout.js";
import { confirmed, save, showSaveState } from "./save.js";
import { S } from "./state.js";
import { countChars } from "./text.js";

addWords({
  zh: {
    chapters: "章节", chapterAdd: "加一章", opening: "（开头，无标题）", chapterCount: (n) => `${n} 章`,
    chapterUp: "上移", chapterDown: "下移", chapterRename: "改标题", chapterExport: "导出这一章 .txt", chapterDelete: "删除这一章",
    chapterTitlePrompt: "这一章的标题（只写名字时自动加上章号）：",
    chapterDeleteConfirm: (title, n) => `删除「${title}」（${n} 字）？\n可以用「撤销」（Ctrl+Z）或在「版本历史」里恢复。`,
    chapterDeleted: (title) => `已删除「${title}」。要找回：按「撤销」，或在「版本历史」里恢复删除前的版本。`,
    chapterChanged: "章节和刚才看到的不一样了（文稿在别处改过？），这次没有改动。请再试一次。",
    chapterNotSaved: "文稿还没保存到服务器，这次没有改动章节（文字仍在浏览器里）。",
    chapterConflict: "这篇文稿在别处（另一个标签页？）被修改过了，这次没有改动章节。",
    bookExport: "整本导出",
  },
  en: {
    chapters: "Chapters", chapterAdd: "Add chapter", opening: "(opening, untitled)", chapterCount: (n) => `${n} chapters`,
    chapterUp: "Move up", chapterDown: "Move down", chapterRename: "Rename", chapterExport: "Export this chapter (.txt)",
    chapterDelete: "Delete this chapter",
    chapterTitlePrompt: "Chapter title (a bare name gets the chapter number in front):",
    chapterDeleteConfirm: (title, n) => `Delete “${title}” (${n} chars)?\nUndo (Ctrl+Z) or the version history brings it back.`,
    chapterDeleted: (title) => `Deleted “${title}”. To get it back: Undo, or restore the version before it in Versions.`,
    chapterChanged: "The chapters are not the ones shown (was the manuscript changed elsewhere?); nothing was changed. Try again.",
    chapterNotSaved: "The manuscript is not saved on the server yet, so the chapters were not changed (the text is kept in this browser).",
    chapterConflict: "This manuscript was changed elsewhere (another tab?); the chapters were not changed.",
    bookExport: "Whole book",
  },
});

// --------------------------------------------------------------------- finding chapters
// The same rule as aiwriter/story/book.py HEADING and chapters.find (Python's \w is any letter or
// digit; splitlines() breaks at these line ends too). Offsets are the editor's (UTF-16 units).
const HEADING = /^[ \t\u3000]*((?:第[0-9０-９一二三四五六七八九十百千万零〇两]+[章回节卷集部篇])(?:[ \t\u3000:：、.．-].*|\S.*)?|(?:Chapter|CHAPTER)\s+[\p{L}\p{N}_]+.*|序章|序言|楔子|尾声|后记)[ \t\u3000]*$/u;
const LINE_END = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/g;
const MAX_TITLE = 200;

export function findChapters(text) {
  const starts = [];
  let pos = 0;
  LINE_END.lastIndex = 0;
  for (;;) {
    const m = LINE_END.exec(text);
    const end = m ? m.index + m[0].length : text.length;
    if (!m && pos >= text.length) break;
    const bare = text.slice(pos, end).replace(/[\r\n]+$/, "");
    if ((bare.length <= MAX_TITLE || [...bare].length <= MAX_TITLE) && HEADING.test(bare)) {
      starts.push([pos, end, bare.replace(/^[ \t\u3000]+|[ \t\u3000]+$/g, "")]);
    }
    if (!m) break;
    pos = end;
  }
  const spans = [];
  const first = starts.length ? starts[0][0] : text.length;
  if (first > 0 && text.slice(0, first).trim()) spans.push({ title: "", start: 0, body: 0, end: first });
  starts.forEach(([start, body, title], i) => spans.push({ title, start, body, end: i + 1 < starts.length ? starts[i + 1][0] : text.length }));
  if (!spans.length) spans.push({ title: "", start: 0, body: 0, end: text.length });
  for (const s of spans) s.chars = countChars(text.slice(s.body, s.end));
  return spans;
}

const DIGITS = "零一二三四五六七八九";
// 1 -> 一, 12 -> 十二, 105 -> 一百零五 (as chapters.chinese_number)
export function chineseNumber(n) {
  if (n <= 0 || n > 9999) return String(n);
  let out = "", zero = false;
  for (const [value, name] of [[1000, "千"], [100, "百"], [10, "十"]]) {
    const d = Math.floor(n / value);
    n %= value;
    if (d) {
      if (zero) out += "零";
      out += (value === 10 && d === 1 && !out ? "" : DIGITS[d]) + name;
      zero = false;
    } else if (out) zero = true;
  }
  if (n) out += (zero ? "零" : "") + DIGITS[n];
  return out;
}

// 一 -> 1, 十二 -> 12, 一百零五 -> 105, 12 / １２ -> 12; NaN for anything else
export function parseNumber(s) {
  const ascii = s.replace(/[０-９]/g, (d) => String.fromCharCode(d.charCodeAt(0) - 0xfee0));
  if (/^[0-9]+$/.test(ascii)) return Number(ascii);
  let total = 0, digit = 0, seen = false;
  for (const c of s) {
    const d = "零〇一二两三四五六七八九".indexOf(c);
    const unit = { 十: 10, 百: 100, 千: 1000, 万: 10000 }[c];
    if (d >= 0) { digit = [0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9][d]; seen = true; }
    else if (unit) { total += (seen ? digit : 1) * unit; digit = 0; seen = false; }
    else return NaN;
  }
  return total + digit;
}

const NUMBERED = /^第([0-9０-９一二三四五六七八九十百千万零〇两]+)([章回节卷集部篇])/u;

// The heading prefix of the chapter after the last numbered one ("第三章" after "第二章 …",
// "第13回" after "第12回 …"); 楔子 and other unnumbered headings do not count.
export function nextNumber(list) {
  const numbered = list.map((c) => c.title.match(NUMBERED)).filter(Boolean);
  const last = numbered[numbered.length - 1];
  const n = last ? parseNumber(last[1]) : NaN;
  if (!Number.isFinite(n)) return `第${chineseNumber(numbered.length + 1)}章`;
  return `第${/^[0-9０-９]+$/.test(last[1]) ? n + 1 : chineseNumber(n + 1)}${last[2]}`;
}

// A title as typed: a heading as it is; a bare name gets the chapter's number in front
export function headingFor(typed, prefix) {
  const title = typed.trim();
  return HEADING.test(title) || !prefix ? title : `${prefix} ${title}`;
}

// ---------------------------------------------------------------------------- the list

let chapters = [];
let parsed = null;   // the text the list was read from
let current = -1;    // the chapter the cursor is in

const label = (c) => c.title || t("opening");

function refresh(force = false) {
  if (!force && editor.value === parsed) return;
  parsed = editor.value;
  chapters = findChapters(parsed);
  current = chapterAt(editor.selectionStart);
  renderChapters();
}

function chapterAt(pos) {
  let i = 0;
  while (i + 1 < chapters.length && chapters[i + 1].start <= pos) i++;
  return i;
}

function tool(text, title, fn, disabled = false, cls = "") {
  const b = el("button", "icon " + cls, text);
  b.type = "button"; b.title = title; b.setAttribute("aria-label", title);
  b.disabled = disabled || !!S.busy;
  b.onclick = (e) => { e.stopPropagation(); fn(); };
  return b;
}

export function renderChapters() {
  const ol = $("chapter-list");
  if (!ol) return;
  $("chapter-count").textContent = t("chapterCount", chapters.length);
  const untitledFirst = chapters.length && !chapters[0].title;
  ol.replaceChildren();
  chapters.forEach((c, i) => {
    const li = el("li", i === current ? "current" : "");
    li.dataset.index = i;
    const name = el("span", "name", label(c));
    name.title = label(c);
    const tools = el("span", "tools");
    const fixed = untitledFirst && i === 0;  // the untitled opening cannot move, nor can anything go before it
    tools.append(
      tool("↑", t("chapterUp"), () => change("move", i, { to: i - 1 }), fixed || i === 0 || (untitledFirst && i === 1)),
      tool("↓", t("chapterDown"), () => change("move", i, { to: i + 1 }), fixed || i === chapters.length - 1),
      tool("✎", t("chapterRename"), () => rename(i)),
      tool("⤓", t("chapterExport"), () => exportFile(`chapters/${i}/export?format=txt`, `${c.title || "chapter"}.txt`)),
      tool("×", t("chapterDelete"), () => remove(i), chapters.length < 2 && !c.title, "danger"),
    );
    li.append(name, el("small", "", t("chars", c.chars)), tools);
    li.onclick = () => jump(i);
    ol.append(li);
  });
  for (const b of document.querySelectorAll("#chapters-panel .book button, #chapter-add")) b.disabled = !!S.busy || !S.doc;
}

// --------------------------------------------------------------------------- jumping

// where offset `pos` of the editor's text is drawn: a hidden copy of the text area's box
function offsetTop(pos) {
  const cs = getComputedStyle(editor);
  const copy = document.createElement("div");
  for (const p of ["font", "letterSpacing", "lineHeight", "whiteSpace", "overflowWrap", "wordBreak", "tabSize", "textIndent",
    "paddingTop", "paddingLeft", "paddingRight"]) copy.style[p] = cs[p];
  Object.assign(copy.style, { position: "absolute", visibility: "hidden", left: "-10000px", top: "0", boxSizing: "border-box",
    width: `${editor.clientWidth}px`, border: "0", whiteSpace: "pre-wrap" });
  copy.textContent = editor.value.slice(0, pos);
  const marker = document.createElement("span");
  marker.textContent = "\u200b";
  marker.style.display = "inline-block";  // a box as tall as the line: its top is the line's top
  copy.append(marker);
  document.body.append(copy);
  const top = marker.offsetTop;
  copy.remove();
  return top;
}

export function jump(i) {
  const c = chapters[i];
  if (!c) return;
  closeDrawers();
  editor.focus({ preventScroll: true });
  editor.setSelectionRange(c.start, c.start);
  editor.scrollTop = Math.max(0, offsetTop(c.start) - parseFloat(getComputedStyle(editor).paddingTop));
  current = i;
  renderChapters();
}

// --------------------------------------------------------------------------- changes

// The editor's text saved on the server (a save in flight awaited, unsaved text saved); false if
// it could not be (offline, a conflict: save() has said so, or this says so) or another manuscript opened.
async function savedFirst(doc) {
  while (S.saving) await S.saving.catch(() => {});
  if (S.dirty) await save("save");
  if (S.doc !== doc) return false;
  if (S.dirty) {
    if ($("banner").hidden) banner(t("chapterNotSaved"), "error");  // keep save()'s question (a conflict) if it asked one
    return false;
  }
  return true;
}

// Run a chapter change: editor held still, unsaved text saved first, the server's chapters
// checked against the ones shown, the change sent with base_revision, the new text loaded.
async function withServer(i, send) {
  if (S.busy || S.gen || S.preparing || !S.doc) return null;  // S.preparing: a generation assembling its prompt
  const doc = S.doc;
  const shown = chapters[i];
  S.busy = true;
  editor.readOnly = true;
  renderChapters();
  try {
    if (!(await savedFirst(doc))) return null;
    refresh();
    const mine = chapters[i];
    const theirs = await api("GET", `/api/docs/${doc.id}/chapters`);
    const server = theirs.chapters[i];
    const conflict = () => banner(t("chapterConflict"), "error", [[t("loadTheirs"), () => openDoc(doc.id, { discardDraft: true })]]);
    if (theirs.revision !== doc.revision) { conflict(); return null; }
    if (!shown || !mine || !server || server.title !== mine.title || mine.title !== shown.title
        || theirs.chapters.length !== chapters.length) {
      banner(t("chapterChanged"), "error");
      return null;
    }
    let res;
    try {
      res = await send(doc, doc.revision);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) { conflict(); return null; }
      throw e;
    }
    const fresh = await api("GET", `/api/docs/${doc.id}`);
    if (S.doc !== doc) return null;
    pushUndo();  // 撤销 brings the text before the change back (and saves it)
    confirmed(fresh);
    S.dirty = false;
    // the AI marks follow the edit where they can (the server keeps none for the new text: the
    // next autosave sends them)
    setText(fresh.text, { keepScroll: true });
    showSaveState();
    tabs.postMessage({ doc: doc.id, revision: fresh.revision });
    refreshDocList();
    loadVersions();
    return res;
  } catch (e) {
    banner(t("error") + e.message, "error");
    return null;
  } finally {
    S.busy = null;
    editor.readOnly = !!S.gen;
    refresh(true);
  }
}

const base = (rev) => ({ base_revision: rev });

async function change(kind, i, extra) {
  if (kind === "move") {
    await withServer(i, (doc, rev) => api("POST", `/api/docs/${doc.id}/chapters/${i}/move`, { ...extra, ...base(rev) }));
  }
}

async function add() {
  if (S.busy || S.gen || !S.doc) return;
  refresh();
  const prefix = nextNumber(chapters);
  const typed = prompt(t("chapterTitlePrompt"), prefix);
  if (typed === null || !typed.trim()) return;
  const title = headingFor(typed, prefix);
  const i = chapters.length - 1;
  const res = await withServer(i, (doc, rev) => api("POST", `/api/docs/${doc.id}/chapters`, { title, ...base(rev) }));
  if (res) {
    // the cursor to the end of the new chapter, ready to write
    const last = chapters[chapters.length - 1];
    jump(chapters.length - 1);
    editor.setSelectionRange(last.end, last.end);
  }
}

async function rename(i) {
  const c = chapters[i];
  if (!c || S.busy || S.gen) return;
  const typed = prompt(t("chapterTitlePrompt"), c.title);
  if (typed === null || !typed.trim()) return;
  // a bare name keeps the chapter's number (第一章 起 -> 第一章 开端)
  const number = c.title.match(NUMBERED);
  const title = headingFor(typed, number ? number[0] : "");
  if (title === c.title) return;
  await withServer(i, (doc, rev) => api("PATCH", `/api/docs/${doc.id}/chapters/${i}`, { title, ...base(rev) }));
}

async function remove(i) {
  const c = chapters[i];
  if (!c || S.busy || S.gen) return;
  if (!confirm(t("chapterDeleteConfirm", label(c), c.chars))) return;
  const res = await withServer(i, (doc, rev) => api("DELETE", `/api/docs/${doc.id}/chapters/${i}?base_revision=${rev}`));
  if (res) banner(t("chapterDeleted", label(c)));
}

// ---------------------------------------------------------------------------- export

// the file name from Content-Disposition (filename*=UTF-8''…), else the fallback
function fileName(res, fallback) {
  const m = (res.headers.get("Content-Disposition") || "").match(/filename\*=UTF-8''([^;]+)/i);
  try { return m ? decodeURIComponent(m[1]) : fallback; } catch (e) { return fallback; }
}

// Downloads read the server's copy: the editor's text is saved first. Fetched (a plain link cannot
// carry the API key) and handed over as a download.
async function exportFile(path, fallback) {
  if (!S.doc || S.busy) return;
  const doc = S.doc;
  try {
    if (!(await savedFirst(doc))) return;
    const res = await authFetch(`/api/docs/${doc.id}/${path}`);
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await res.blob());
    a.download = fileName(res, fallback);
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) { banner(t("error") + e.message, "error"); }
}

// ----------------------------------------------------------------------------- wiring

$("chapter-add").onclick = add;
for (const b of document.querySelectorAll("#chapters-panel .book button")) {
  b.onclick = () => exportFile(`book?format=${b.dataset.format}`, `${(S.doc && S.doc.title) || "book"}.${b.dataset.format}`);
}
let pending = null;
editor.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(refresh, 250); });
for (const type of ["click", "keyup", "select"]) {
  editor.addEventListener(type, () => {
    const i = chapterAt(editor.selectionStart);
    if (i !== current) { current = i; renderChapters(); }
  });
}
// text set by code (opening a manuscript, a generation, undo, another tab) is noticed here
setInterval(() => refresh(), 500);
