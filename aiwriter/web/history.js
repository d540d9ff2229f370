// 生成记录: every generation of the open manuscript, newest first.
import { api } from "./api.js";
import { $, editor, el } from "./dom.js";
import { pushUndo, renderMarks, setText } from "./editor.js";
import { clock, t } from "./i18n.js";
import { changed } from "./save.js";
import { S } from "./state.js";
import { addRange, countChars } from "./text.js";

export async function logGenerations(round) {
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

export async function loadGenerations() {
  if (!S.doc) return;
  try { S.generations = (await api("GET", `/api/docs/${S.doc.id}/generations`)).generations; } catch (e) { S.generations = []; }
  renderHistory();
}

function append(g) {
  if (S.gen) return;
  pushUndo();
  const start = editor.value.length;
  setText(editor.value + g.text);
  S.marks.ai = addRange(S.marks.ai, start, editor.value.length);  // written by the model
  renderMarks();
  changed();
}

export function renderHistory() {
  const ol = $("history-list");
  ol.replaceChildren();
  for (const g of S.generations) {
    const li = el("li");
    const meta = el("div", "meta");
    const s = g.settings || {};
    // one line: when, model, length, settings; the full line is the tooltip when it is cut short
    const line = `${clock(g.created)} · ${g.model} · ${t("chars", countChars(g.text))} · T${s.temperature ?? "-"} p${s.top_p ?? "-"}`;
    const info = el("span", "info", line);
    info.title = line;
    const add = el("button", "", t("append"));
    add.type = "button";
    add.onclick = () => append(g);
    const copy = el("button", "", t("copy"));
    copy.type = "button";
    copy.onclick = () => navigator.clipboard && navigator.clipboard.writeText(g.text);
    const tools = el("span", "tools");
    tools.append(add, copy);
    meta.append(info, tools);
    const text = el("div", "text", g.text);
    text.onclick = () => li.classList.toggle("open");
    li.append(meta, text);
    ol.append(li);
  }
}
