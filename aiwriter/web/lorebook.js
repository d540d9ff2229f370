// 设定集: the lorebook editor (every field the library has), import (KoboldAI Lite save, NovelAI
// .lorebook, our JSON: the server reads the file and names the entry it cannot take) and export
// (the three forms, as a download).
import { api, ApiError, authFetch, describe } from "./api.js";
import { $, banner, editor, el } from "./dom.js";
import { setText } from "./editor.js";
import { t } from "./i18n.js";
import { S } from "./state.js";
import { ENTRY, field, flushStory, formOf, onStoryChange, renderStory, STORY, storyChanged } from "./story.js";

const title = (e, i) => e.name.trim() || e.keys.split(",")[0].trim() || t("lbUntitled", i + 1);
let open = new Set();  // entries shown unfolded (by position)

function entryCard(e, i) {
  const card = el("details", "lb-entry");
  card.dataset.index = i;
  card.open = open.has(i);
  card.ontoggle = () => { if (card.open) open.add(i); else open.delete(i); };
  const summary = el("summary");
  const name = el("span", "lb-name", title(e, i));
  const tags = el("span", "lb-tags", !e.enabled ? t("lbOff") : e.constant ? t("lbConstant") : "");
  summary.append(name, tags);
  const redraw = () => { name.textContent = title(e, i); tags.textContent = !e.enabled ? t("lbOff") : e.constant ? t("lbConstant") : ""; };
  const del = el("button", "danger", t("lbDelete"));
  del.type = "button"; del.dataset.i18n = "lbDelete"; del.className = "danger lb-delete";
  del.onclick = () => {
    if (!confirm(t("lbConfirmDelete", title(e, i)))) return;
    STORY.data.entries.splice(i, 1);
    open = new Set([...open].filter((j) => j !== i).map((j) => (j > i ? j - 1 : j)));
    storyChanged(); renderLorebook();
  };
  const body = el("div", "lb-body");
  body.append(
    field(e, "name", "fName", "text", { onChange: redraw }),
    field(e, "keys", "fKeys", "text", { onChange: redraw }),
    field(e, "content", "fContent", "area", { rows: 4 }),
    field(e, "enabled", "fEnabled", "check", { onChange: redraw }),
    field(e, "constant", "fConstant", "check", { onChange: redraw }),
    field(e, "secondary_keys", "fSecondary", "text"),
    field(e, "selective", "fSelective", "check"),
    field(e, "anti_keys", "fAnti", "text"),
    field(e, "probability", "fProbability", "int", { min: 0, max: 100 }),
    field(e, "scan_depth", "fScanDepth", "int", { min: 0, max: 100000000 }),
    field(e, "order", "fOrder", "int", { min: -1000000000, max: 1000000000 }),
    field(e, "budget", "fBudget", "int", { min: 0, max: 100000000 }),
    del,
  );
  for (const node of body.querySelectorAll("input[type=text]")) node.maxLength = node.dataset.field === "name" ? 200 : 20000;
  card.append(summary, body);
  return card;
}

export function renderLorebook() {
  const list = $("lb-list");
  if (!list) return;
  list.replaceChildren();
  $("lb-scan-depth").replaceChildren();
  if (!STORY.data) return;
  $("lb-scan-depth").append(field(STORY.data, "scan_depth", "lbScanDepth", "int", { id: "lb-scan", min: 0, max: 100000000 }));
  const entries = STORY.data.entries;
  if (!entries.length) list.append(el("p", "hint", t("lbEmpty")));
  entries.forEach((e, i) => list.append(entryCard(e, i)));
  const fmt = $("lb-export-format");
  const chosen = fmt.value || "lite";
  fmt.replaceChildren(...Object.entries(t("lbFormats")).map(([v, label]) => new Option(label, v)));
  fmt.value = chosen;
}

$("lb-add").onclick = () => {
  if (!STORY.data) return;
  STORY.data.entries.push({ ...ENTRY });
  open.add(STORY.data.entries.length - 1);
  storyChanged(); renderLorebook();
  const cards = document.querySelectorAll("#lb-list .lb-entry");
  cards[cards.length - 1].querySelector("input[data-field=name]").focus();
};

// the server reads the file (any of the three forms) and says what is wrong with it, naming the entry
export async function importFile(file) {
  if (!S.doc || !STORY.data) return;
  const doc = S.doc.id;
  let res;
  try {
    res = await api("POST", `/api/docs/${doc}/story/import`, { file: await file.text(), name: file.name });
  } catch (e) {
    banner(t("lbImportFailed", file.name, e instanceof ApiError ? e.message : describe(e)), "error");
    return false;
  }
  if (!S.doc || S.doc.id !== doc || STORY.doc !== doc) return false;
  const cur = STORY.data, got = formOf(res.story);
  const has = cur.entries.length || cur.memory.trim() || cur.authors_note.trim();
  if (has && !confirm(t("lbConfirmImport", file.name, got.entries.length))) return false;
  cur.entries = got.entries;
  if (got.memory.trim()) cur.memory = got.memory;
  if (got.authors_note.trim()) cur.authors_note = got.authors_note;
  if (res.kind !== "novelai") {  // a NovelAI lorebook holds entries only
    for (const k of ["an_template", "an_depth", "scan_depth", "context_budget"]) cur[k] = got[k];
  }
  open = new Set();
  storyChanged(0);
  renderStory(); renderLorebook();
  let msg = t("lbImported", file.name, got.entries.length, res.kind);
  if (res.text && res.text.trim() && !editor.value.trim()) { setText(res.text); msg += " " + t("lbStoryText"); }
  $("lb-status").textContent = msg;
  return true;
}

$("lb-import").onclick = () => $("lb-import-file").click();
$("lb-import-file").onchange = async () => {
  const input = $("lb-import-file");
  const file = input.files[0];
  input.value = "";
  if (file) await importFile(file);
};

$("lb-export").onclick = async () => {
  if (!S.doc) return;
  const format = $("lb-export-format").value || "lite";
  try {
    await flushStory();  // the server exports what it holds
    const res = await authFetch(`/api/docs/${S.doc.id}/story/export?format=${format}`);
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await res.blob());
    a.download = `${S.doc.title || "lorebook"}${format === "novelai" ? ".lorebook" : format === "lite" ? ".kobold.json" : ".json"}`;
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) { banner(describe(e), "error"); }
};

onStoryChange((why) => { if (why === "load") { open = new Set(); $("lb-status").textContent = ""; renderLorebook(); } });
