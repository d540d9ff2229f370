// AI-Writer's writing page: plain ES modules, no build step. It talks to the same APIs as any
// client: /v1/completions (streamed) for writing, /api/docs for manuscripts.
// Safety of the manuscript: every change goes to localStorage at once and to the server after a
// short pause; a browser copy is dropped only when the server holds that exact text (drafts.js).
//
//   i18n.js       words (zh/en)            fields.js    sampling fields + one-line help
//   dom.js        $, banner                api.js       fetch with the API key, errors
//   state.js      the page's state (window.AIWriter)
//   text.js       char counting, marked ranges through edits
//   editor.js     text area, undo/redo, AI-text marks layer
//   drafts.js     per-page drafts in localStorage, orphans of closed pages
//   save.js       autosave, save status      documents.js  list, open, new, versions
//   settings.js   model, sampling, presets   generate.js   continue, rewrite, candidates
//   history.js    生成记录                     layout.js     panels, keys
//   chapters.js   章节: list, jump, add/rename/move/delete, export   states.js  起始状态 (state files)
//   story.js      设定 (memory, author's note, budget; saved with the manuscript), story-words.js its words
//   lorebook.js   设定集 editor, import/export  context.js    上下文 viewer, the prompt with story settings
import { api, isOffline, takeKeyFromUrl } from "./api.js";
import { renderChapters } from "./chapters.js";
import { $, banner } from "./dom.js";
import { startHeartbeat } from "./drafts.js";
import { renderMarks, updateCount } from "./editor.js";
import { newDoc, openDoc, recoverDrafts, refreshDocList, renderVersions } from "./documents.js";
import { renderCandidates } from "./generate.js";
import { renderHistory } from "./history.js";
import { lang, setLang, t } from "./i18n.js";
import "./layout.js";
import { showSaveState } from "./save.js";
import { loadModels, loadSampling, renderPresets, renderSampling } from "./settings.js";
import { S } from "./state.js";
import { loadStates, renderStates } from "./states.js";
import { renderContext } from "./context.js";
import { renderLorebook } from "./lorebook.js";
import { renderStory } from "./story.js";

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of document.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
  $("btn-lang").textContent = lang === "zh" ? "EN" : "中文";
  renderSampling(); renderPresets(); renderCandidates(); renderHistory(); renderVersions(); updateCount(); showSaveState();
  renderChapters(); renderStates();
  renderStory(); renderLorebook(); renderContext();
  $("gen-status").textContent = "";
  if (S.doc) refreshDocList();
}
$("btn-lang").onclick = () => { setLang(lang === "zh" ? "en" : "zh"); applyLang(); };

async function start() {
  takeKeyFromUrl();
  startHeartbeat();
  applyLang();
  renderMarks();
  // the server may be down: keep trying (what was typed before waits in this browser)
  for (let wait = 2000; ; wait = Math.min(wait * 1.5, 10000)) {
    try { S.config = await api("GET", "/api/config"); break; } catch (e) {
      if (!isOffline(e)) { banner(t("loadFailed") + e.message, "error"); return; }
      banner(t("connecting"), "error");
      await new Promise((r) => setTimeout(r, wait));
    }
  }
  $("banner").hidden = true;
  loadSampling();
  if (S.config.max_n) $("n").max = S.config.max_n;
  applyLang();
  await loadModels().catch(() => {});
  await loadStates();
  const docs = (await refreshDocList()) || [];
  const last = Number(localStorage.getItem("aiwriter.lastDoc"));
  const target = docs.find((d) => d.id === last) || docs[0];
  if (target) await openDoc(target.id); else await newDoc();
  setInterval(recoverDrafts, 4000);  // drafts of pages closed since
  document.body.dataset.ready = "yes";
}

start();
