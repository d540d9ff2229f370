// The manuscript's text area: the char count, undo/redo (text and marks together), and the
// layer behind the text that shades AI-written ranges.
import { $, editor } from "./dom.js";
import { t } from "./i18n.js";
import { changed } from "./save.js";
import { S } from "./state.js";
import { countChars, diff, shiftRange, shiftRanges } from "./text.js";

let shown = "";  // the editor's value as last seen here: edits are measured against it

export function updateCount() { $("char-count").textContent = t("chars", countChars(editor.value)); }

const snapshot = () => ({ text: editor.value, marks: { ai: S.marks.ai.map((r) => [...r]), last: S.marks.last && [...S.marks.last] } });

export function pushUndo(snap = snapshot()) {
  const top = S.undo[S.undo.length - 1];
  if (top && top.text === snap.text) return;
  S.undo.push(snap);
  if (S.undo.length > 200) S.undo.shift();
  S.redo = [];
  updateUndoButtons();
}

export function updateUndoButtons() {
  $("btn-undo").disabled = !S.undo.length || !!S.gen;
  $("btn-redo").disabled = !S.redo.length || !!S.gen;
}

// Follow an edit made by the writer or by code: marks move with the text around them.
function follow(text) {
  const edit = diff(shown, text);
  S.marks = { ai: shiftRanges(S.marks.ai, edit), last: shiftRange(S.marks.last, edit) };
  shown = text;
}

// Replace the text; marks move with it unless given.
export function setText(text, { keepScroll = false, marks = null } = {}) {
  const top = editor.scrollTop;
  editor.value = text;
  if (marks) { S.marks = marks; shown = text; } else follow(text);
  if (keepScroll) editor.scrollTop = top; else editor.scrollTop = editor.scrollHeight;
  renderMarks();
  changed();
}

// Streamed text arrives at the end; it is marked as it comes.
export function appendText(piece, markAi) {
  const start = editor.value.length;
  editor.value += piece;
  shown = editor.value;
  if (markAi) {
    const last = S.marks.ai[S.marks.ai.length - 1];
    if (last && last[1] === start) last[1] = editor.value.length; else S.marks.ai.push([start, editor.value.length]);
  }
  renderMarks();
}

export function undo() {
  if (S.gen || !S.undo.length) return;
  S.redo.push(snapshot());
  const snap = S.undo.pop();
  setText(snap.text, { keepScroll: true, marks: snap.marks });
  updateUndoButtons();
}

export function redo() {
  if (S.gen || !S.redo.length) return;
  S.undo.push(snapshot());
  const snap = S.redo.pop();
  setText(snap.text, { keepScroll: true, marks: snap.marks });
  updateUndoButtons();
}

// ------------------------------------------------------------------ marks layer

const layer = $("marks");
let pending = false;

export function marksOn() { return localStorage.getItem("aiwriter.markAi") !== "no"; }

export function renderMarks() {
  document.body.dataset.marks = marksOn() ? "on" : "off";
  if (!marksOn()) { layer.replaceChildren(); return; }
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    const text = editor.value;
    const parts = [];
    let at = 0;
    for (const [a, b] of S.marks.ai) {
      if (a >= text.length) break;
      if (a > at) parts.push(document.createTextNode(text.slice(at, a)));
      const m = document.createElement("mark");
      m.textContent = text.slice(a, Math.min(b, text.length));
      parts.push(m);
      at = Math.min(b, text.length);
    }
    parts.push(document.createTextNode(text.slice(at) + "\n "));
    layer.replaceChildren(...parts);
    fitLayer();
  });
}

function fitLayer() {
  layer.style.width = `${editor.clientWidth + 2}px`;   // + the 1px borders: same text width as the editor
  layer.style.height = `${editor.clientHeight + 2}px`;
  layer.scrollTop = editor.scrollTop;
}

editor.addEventListener("scroll", () => { layer.scrollTop = editor.scrollTop; });
new ResizeObserver(() => { if (marksOn()) fitLayer(); }).observe(editor);

export function setMarksOn(on) {
  localStorage.setItem("aiwriter.markAi", on ? "yes" : "no");
  renderMarks();
}

// ------------------------------------------------------------------ typing

editor.addEventListener("beforeinput", () => {
  // a pause of a second starts a new undo step while typing
  if (Date.now() - S.lastTyping > 1000) pushUndo();
  S.lastTyping = Date.now();
});
editor.addEventListener("input", () => { follow(editor.value); renderMarks(); changed(); });
