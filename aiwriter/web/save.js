// Saving: every change goes to this browser's draft at once and to the server after a short
// pause. Nothing is saved while a generation is running: versions hold finished states only.
import { api, ApiError, authHeaders } from "./api.js";
import { $, banner, editor } from "./dom.js";
import { dropOwnDraft, tabs, writeDraft } from "./drafts.js";
import { updateCount } from "./editor.js";
import { loadVersions, openDoc, refreshDocList } from "./documents.js";
import { locale, t } from "./i18n.js";
import { S } from "./state.js";
import { validMarks } from "./text.js";

export const marksKey = (m, text) => JSON.stringify(validMarks(m, text));
const title = () => $("title").value.trim() || S.doc.title;

export function changed() {
  updateCount();
  if (!S.doc) return;
  if (editor.value === S.savedText && marksKey(S.marks, editor.value) === S.savedMarks && title() === S.doc.title) {
    S.dirty = false; dropOwnDraft(S.doc.id); showSaveState(); return;
  }
  S.dirty = true;
  draftNow();
  showSaveState();
  clearTimeout(S.saveTimer);
  if (!S.gen) S.saveTimer = setTimeout(() => save("autosave"), 1200);
}

export function draftNow() {
  writeDraft(S.doc.id, { text: editor.value, title: $("title").value, marks: S.marks, revision: S.doc.revision });
}

export function showSaveState() {
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
      time.textContent = new Date(S.savedAt).toLocaleTimeString(locale());
      el.append(time);
    }
  }
}

// The server's copy as confirmed by a save or a load
export function confirmed(doc) {
  S.doc.revision = doc.revision; S.doc.title = doc.title;
  S.savedText = doc.text; S.savedMarks = marksKey(doc.marks, doc.text);
}

export async function save(reason = "autosave", force = false) {
  clearTimeout(S.saveTimer);
  if (!S.doc || (!S.dirty && !force)) return;
  if (S.gen) return;  // the end of the generation saves (reason "generation")
  if (S.saving) { await S.saving.catch(() => {}); return save(reason, force); }
  const doc = S.doc, text = editor.value, marks = validMarks(S.marks, text);
  const body = { text, title: title(), reason, marks };
  if (!force) body.revision = doc.revision;
  S.saving = api("PUT", `/api/docs/${doc.id}`, body);
  showSaveState();
  try {
    const res = await S.saving;
    if (S.doc !== doc) return;
    S.offline = false;
    delete document.body.dataset.saveError;
    confirmed(res);
    S.savedAt = Date.now();
    if (editor.value === res.text && marksKey(S.marks, editor.value) === S.savedMarks && title() === res.title) {
      S.dirty = false;
      dropOwnDraft(doc.id);
    } else {
      draftNow();  // typed while saving: the draft now builds on the new revision
    }
    tabs.postMessage({ doc: doc.id, revision: res.revision });
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
      body: JSON.stringify({ text: editor.value, revision: S.doc.revision, reason: "autosave", marks: S.marks }) }).catch(() => {});
  }
});
