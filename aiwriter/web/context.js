// 上下文: exactly what the model reads to continue the manuscript, assembled by the server
// (POST /api/docs/{id}/context) from the editor's text and the story settings: the parts in order,
// which entries fired and why, chars used of the budget, warnings. generate.js sends the same
// assembled text as the prompt when the manuscript has story settings.
import { api, describe } from "./api.js";
import { $, editor, el } from "./dom.js";
import { lang, t } from "./i18n.js";
import { S } from "./state.js";
import { hasStory, onStoryChange, payload, STORY } from "./story.js";
import { half } from "./story-words.js";

// the server's reading of a prompt (tokenizer.clean_context): each line stripped, empty lines dropped
export const clean = (text) => "\n" + text.split("\n").map((l) => l.trim().replace(/^[\u3000\r]+|[\u3000\r]+$/g, "").trim()).filter((l) => l).join("\n");

// The context for continuing `text` (null without story settings: the text is read as it is)
export async function assembleContext(text, seed = 0) {
  if (!S.doc || !hasStory()) return null;
  seed = ((Math.trunc(seed) % 2 ** 31) + 2 ** 31) % 2 ** 31;  // any generation seed; the rolls take 0 to 2^31
  return api("POST", `/api/docs/${S.doc.id}/context`, { text, story: payload(), seed });
}

// what 续写 / 换个写法 send as the prompt
export async function promptFor(base, seed) {
  const ctx = await assembleContext(base, seed ?? Math.floor(Math.random() * 2 ** 31));
  S.lastContext = ctx;  // tests read it
  return ctx ? ctx.text : base;
}

let timer = null, shown = null;
const visible = () => { const p = $("pane-context"); return p && !p.hidden; };

export async function refreshContext() {
  if (!visible() || !S.doc) return;
  const doc = S.doc.id, text = editor.value;
  // probabilities are rolled with the seed field's value (as 续写 does), or 0 when it is empty
  const seed = Number.isInteger(Number($("seed").value.trim())) ? Number($("seed").value.trim()) : 0;
  let ctx = null, error = null;
  try { ctx = await assembleContext(text, seed); } catch (e) { error = e; }
  if (!S.doc || S.doc.id !== doc) return;
  shown = { ctx, error, text, seed };
  renderContext();
}

export function renderContext() {
  const box = $("ctx-view");
  if (!box || !shown) return;
  box.replaceChildren();
  const { ctx, error, text, seed } = shown;
  if (error) { box.append(el("p", "error-text", describe(error))); return; }
  if (!ctx) {
    box.append(el("p", "hint", t("ctxNone")));
    const pre = el("pre", "ctx-text", clean(text).replace(/^\n/, ""));
    pre.id = "ctx-text";
    box.append(pre);
    return;
  }
  const summary = el("p", "ctx-summary", t("ctxUsed", ctx.chars_used, ctx.budget, ctx.stable_prefix));
  summary.id = "ctx-summary";
  const meter = el("div", "ctx-meter");
  const fill = el("span");
  fill.style.width = `${Math.min(100, (100 * ctx.chars_used) / ctx.budget).toFixed(1)}%`;
  meter.append(fill);
  box.append(summary, meter, el("p", "hint", t("ctxStory", ctx.story_start, ctx.story_chars)));
  if (ctx.warnings.length) {
    box.append(el("h3", "", t("ctxWarnings")));
    const ul = el("ul", "ctx-warnings");
    ul.id = "ctx-warnings";
    for (const w of ctx.warnings) ul.append(el("li", "", half(w, lang)));
    box.append(ul);
  }
  box.append(el("h3", "", t("ctxEntries")));
  const entries = el("ul", "ctx-entries");
  entries.id = "ctx-entries";
  for (const r of ctx.entries) {
    const li = el("li", `ctx-entry ${r.status}`);
    li.dataset.status = r.status; li.dataset.index = r.index;
    li.append(el("b", "", r.label), el("span", "tag", t("ctxStatus")[r.status] || r.status),
              el("small", "", half(r.reason, lang) + (r.chars ? ` · ${t("chars", r.chars)}` : "")));
    entries.append(li);
  }
  if (!ctx.entries.length) entries.append(el("li", "hint", t("ctxNoEntries")));
  box.append(entries);
  if (ctx.unmatched) box.append(el("p", "hint", t("ctxUnmatched", ctx.unmatched)));
  if (STORY.data.entries.some((e) => e.enabled && e.probability < 100)) box.append(el("p", "hint", t("ctxSeed", seed)));
  box.append(el("h3", "", t("ctxParts")));
  const parts = el("ol", "ctx-parts");
  parts.id = "ctx-parts";
  for (const p of ctx.parts) {
    const li = el("li", `ctx-part ${p.kind}`);
    li.dataset.kind = p.kind;
    const name = t("ctxKinds")[p.kind] || p.kind;
    li.append(el("span", "tag", p.kind === "entry" || p.kind === "constant" ? `${name} ${p.label}` : name),
              el("small", "", t("chars", p.end - p.start)));
    li.append(el("div", "ctx-part-text", ctx.text.slice(p.start, p.end)));
    parts.append(li);
  }
  box.append(parts, el("h3", "", t("ctxText")));
  const pre = el("pre", "ctx-text", clean(ctx.text).replace(/^\n/, ""));
  pre.id = "ctx-text";
  box.append(pre);
}

function later() {
  clearTimeout(timer);
  if (visible()) timer = setTimeout(refreshContext, 700);
}
onStoryChange(later);
editor.addEventListener("input", later);
$("ctx-refresh").onclick = refreshContext;
// shown when its tab is chosen (layout.js shows the pane)
$("tab-context").addEventListener("click", () => setTimeout(refreshContext, 0));
