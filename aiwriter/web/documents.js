// Manuscripts: the list, opening one (and taking over drafts left in this browser), new,
// rename, delete, export, and the version history.
import { api, ApiError, authFetch, KEY_STORE } from "./api.js";
import { $, banner, editor, el } from "./dom.js";
import { dropDraft, dropOwnDraft, orphanDrafts, releaseOwnDraft, tabs } from "./drafts.js";
import { pushUndo, setText, updateUndoButtons } from "./editor.js";
import { renderCandidates, stopGeneration } from "./generate.js";
import { loadGenerations } from "./history.js";
import { clock, t } from "./i18n.js";
import { closeDrawers } from "./layout.js";
import { changed, confirmed, save, showSaveState } from "./save.js";
import { S } from "./state.js";
import { loadStory } from "./story.js";
import { countChars, validMarks } from "./text.js";

export async function refreshDocList() {
  let docs;
  try { docs = (await api("GET", "/api/docs")).documents; } catch (e) { return; }
  const ul = $("doc-list");
  ul.replaceChildren();
  for (const d of docs) {
    const li = el("li", S.doc && d.id === S.doc.id ? "current" : "", d.title);
    li.dataset.id = d.id;
    li.append(el("small", "", `${t("chars", d.chars)} · ${clock(d.updated)}`));
    li.onclick = () => { closeDrawers(); openDoc(d.id); };
    ul.append(li);
  }
  return docs;
}

export async function openDoc(id, { discardDraft = false } = {}) {
  if (S.gen) stopGeneration();
  if (S.doc && S.dirty && S.doc.id !== id) await save("autosave");
  let doc;
  try { doc = await api("GET", `/api/docs/${id}`); } catch (e) { banner(t("loadFailed") + e.message, "error"); return false; }
  // this page's own unsaved draft of the manuscript is decided on like any left-over draft
  if (discardDraft) dropOwnDraft(doc.id); else releaseOwnDraft(doc.id);
  S.doc = { id: doc.id, title: doc.title, revision: doc.revision };
  confirmed(doc);
  S.dirty = false; S.savedAt = doc.updated * 1000; S.offline = false;
  S.undo = []; S.redo = []; S.rounds = []; S.round = -1; S.offered = null;
  $("title").value = doc.title;
  $("btn-export").href = `/api/docs/${doc.id}/export`;
  localStorage.setItem("aiwriter.lastDoc", String(doc.id));
  $("banner").hidden = true;
  setText(doc.text, { marks: validMarks(doc.marks, doc.text) });
  await recoverDrafts();
  updateUndoButtons(); renderCandidates(); showSaveState();
  await Promise.all([refreshDocList(), loadVersions(), loadGenerations(), loadStory(doc.id)]);
  return true;
}

// Drafts of the open manuscript left by pages that are gone. One made from the revision the
// server still has is restored and saved; one made from an older revision (the server's copy
// changed since), or met while the writer has unsaved changes, is offered. Runs on opening and
// every few seconds (a page closed a moment ago is only known to be gone after a while).
export async function recoverDrafts() {
  if (!S.doc || S.gen) return;
  const doc = S.doc;
  const orphans = await orphanDrafts(doc.id);
  if (S.doc !== doc || S.gen) return;
  for (const { key, draft } of orphans) {
    const title = typeof draft.title === "string" && draft.title.trim() ? draft.title : $("title").value;
    if (draft.text === editor.value && title === $("title").value) { dropDraft(key); continue; }
    if (draft.revision === S.doc.revision && !S.dirty) {
      pushUndo();
      $("title").value = title;
      setText(draft.text, { marks: validMarks(draft.marks, draft.text) });  // now this page's own draft too
      dropDraft(key);
      banner(t("draftRestored", new Date(draft.time || Date.now()).toLocaleString()));
      save("autosave");
      continue;
    }
    if (S.offered === key) continue;
    S.offered = key;
    banner(t("draftFound", new Date(draft.time || Date.now()).toLocaleString()), "", [
      [t("useDraft"), () => {
        pushUndo();
        $("title").value = title;
        setText(draft.text, { marks: validMarks(draft.marks, draft.text) });
        dropDraft(key); S.offered = null;
        save("save");  // a version of its own: the text it replaces stays in the history
      }],
      [t("dropDraft"), () => { dropDraft(key); S.offered = null; }],
    ]);
    return;  // one question at a time
  }
}

// Another page saved the open manuscript: show its text here too, unless this page has
// changes of its own (then its next save meets the conflict and asks).
tabs.addEventListener("message", async ({ data }) => {
  if (!S.doc || data.doc !== S.doc.id || !(data.revision > S.doc.revision) || S.dirty || S.gen || S.saving) return;
  const docId = S.doc.id;
  let doc;
  try { doc = await api("GET", `/api/docs/${docId}`); } catch (e) { return; }
  if (!S.doc || S.doc.id !== docId || S.dirty || S.gen || S.saving || doc.revision <= S.doc.revision) return;
  confirmed(doc);
  $("title").value = doc.title;
  setText(doc.text, { keepScroll: true, marks: validMarks(doc.marks, doc.text) });
  S.savedAt = doc.updated * 1000;
  showSaveState();
  loadVersions();
});

export async function newDoc() {
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
  dropOwnDraft(id);
  S.doc = null; S.dirty = false;
  const docs = await refreshDocList();
  if (docs && docs.length) await openDoc(docs[0].id); else await newDoc();
};

// ----------------------------------------------------------------------------- versions

export async function loadVersions() {
  if (!S.doc) return;
  try { S.versions = (await api("GET", `/api/docs/${S.doc.id}/versions`)).versions; } catch (e) { S.versions = []; }
  renderVersions();
}

export function renderVersions() {
  const ul = $("version-list");
  ul.replaceChildren();
  for (const v of S.versions) {
    const li = el("li", "", `${clock(v.updated)} · ${t("reasons")[v.reason] || v.reason}`);
    li.append(el("small", "", `${t("chars", v.chars)} · …${v.tail.slice(-16)}`));
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
    confirmed(doc);
    setText(doc.text, { marks: validMarks(doc.marks, doc.text) });
    $("version-dialog").close();
    loadVersions();
  };
  $("version-dialog").showModal();
}
