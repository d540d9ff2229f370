// The words of the story panels (设定, 设定集, 上下文), in Chinese and English, added to i18n.js's
// WORDS so that t() and the data-i18n attributes find them.
import { addWords } from "./i18n.js";

const zh = {
  tabStory: "设定", tabLorebook: "设定集", tabContext: "上下文",
  memory: "记忆", memoryHint: "模型在正文前先读的文字：人物、背景、文风。放在最前面，读一次就能反复用。",
  authorsNote: "作者注", authorsNoteHint: "插在结尾前不远处，提醒模型接下来怎么写（如「气氛阴森，慢慢揭开真相」）。",
  anTemplate: "作者注模板（<|> 换成作者注）", anDepth: "作者注插在结尾前多少字",
  contextBudget: "上下文预算：模型最多读多少字（0 = 默认 16000）",
  storyUse: "有记忆、作者注或设定集条目时，续写读的是按设定组装的上下文（见「上下文」），否则直接读正文。",
  storySaving: "设定保存中…", storySaved: "设定已保存", storyUnsaved: "设定未保存（已暂存在浏览器）",
  storyBad: (m) => `设定没有保存：${m}`,
  lbAdd: "添加条目", lbImport: "导入…", lbExport: "导出", lbEmpty: "还没有条目。添加一条，或导入 KoboldAI Lite 存档、NovelAI .lorebook。",
  lbScanDepth: "扫描深度：在正文最后多少字里找关键词（0 = 整个预算）",
  lbFormats: { lite: "KoboldAI Lite 存档 (.json)", novelai: "NovelAI (.lorebook)", aiwriter: "AI-Writer (.json)" },
  lbUntitled: (i) => `条目 ${i}`, lbOff: "停用", lbConstant: "常驻",
  fName: "名字", fKeys: "关键词（逗号分隔；/正则/flags 是正则表达式）", fSecondary: "次要关键词",
  fSelective: "选择性：次要关键词也都要出现", fAnti: "排除词（出现任何一个就不触发）", fConstant: "常驻（总放在最前面）",
  fEnabled: "启用", fProbability: "触发概率 %", fScanDepth: "扫描深度（字，0 = 设定集的）",
  fOrder: "顺序（大的优先放入、更靠近结尾）", fBudget: "最多放入多少字（0 = 不限）", fContent: "内容",
  lbDelete: "删除条目", lbConfirmDelete: (n) => `删除条目「${n}」？`,
  lbConfirmImport: (name, n) => `用「${name}」的 ${n} 条替换当前的设定集？（文件里有记忆、作者注的，也一并替换）`,
  lbImported: (name, n, kind) => `已导入「${name}」：${n} 条（${kind}）。`,
  lbImportFailed: (name, m) => `没有导入「${name}」，设定没有改动：${m}`,
  lbStoryText: "存档里的故事正文已放进空白的文稿。",
  ctxRefresh: "刷新", ctxNone: "这篇文稿没有设定：续写直接读正文（下面是清理后的正文）。",
  ctxUsed: (used, budget, stable) => `已用 ${used} / ${budget} 字 · 稳定前缀 ${stable} 字（读一次，之后复用）`,
  ctxStory: (from, n) => `正文从第 ${from} 字起，读 ${n} 字`,
  ctxEntries: "触发的条目", ctxNoEntries: "没有条目触发。", ctxUnmatched: (n) => `另有 ${n} 条的关键词不在正文里。`,
  ctxSeed: (n) => `概率按种子 ${n} 掷（「设置」里的随机种子；空着时续写每次另掷）。`,
  ctxParts: "组成（按顺序）", ctxText: "模型读到的全文", ctxWarnings: "注意",
  ctxStatus: { front: "常驻 · 最前", inserted: "已插入 · 靠近结尾", dropped: "预算不够，没放入", blocked: "没有触发",
               unlucky: "概率没中", error: "出错" },
  ctxKinds: { memory: "记忆", constant: "常驻条目", story: "正文", entry: "条目", note: "作者注" },
};

const en = {
  tabStory: "Story", tabLorebook: "Lorebook", tabContext: "Context",
  memory: "Memory", memoryHint: "Read before the story: characters, setting, style. It stays at the very front, so it is read once and reused.",
  authorsNote: "Author's note", authorsNoteHint: "Inserted a little before the end to steer what comes next (e.g. “gloomy; reveal the truth slowly”).",
  anTemplate: "Author's note template (<|> becomes the note)", anDepth: "Insert the note this many chars before the end",
  contextBudget: "Context budget: the most chars the model reads (0 = default 16000)",
  storyUse: "With a memory, an author's note or lorebook entries, Continue reads the context assembled from them (see Context); otherwise the text itself.",
  storySaving: "Saving story settings…", storySaved: "Story settings saved", storyUnsaved: "Story settings not saved (kept in this browser)",
  storyBad: (m) => `Story settings not saved: ${m}`,
  lbAdd: "Add entry", lbImport: "Import…", lbExport: "Export", lbEmpty: "No entries yet. Add one, or import a KoboldAI Lite save or a NovelAI .lorebook.",
  lbScanDepth: "Scan depth: search the last this many chars for keys (0 = the whole budget)",
  lbFormats: { lite: "KoboldAI Lite save (.json)", novelai: "NovelAI (.lorebook)", aiwriter: "AI-Writer (.json)" },
  lbUntitled: (i) => `Entry ${i}`, lbOff: "off", lbConstant: "always on",
  fName: "Name", fKeys: "Keys (comma-separated; /regex/flags is a regular expression)", fSecondary: "Secondary keys",
  fSelective: "Selective: all secondary keys must appear too", fAnti: "Anti-keys (any of them: the entry does not fire)",
  fConstant: "Always on (read at the very front)", fEnabled: "Enabled", fProbability: "Probability %",
  fScanDepth: "Scan depth (chars; 0 = the lorebook's)", fOrder: "Order (higher: kept first, placed nearer the end)",
  fBudget: "At most this many chars (0 = no limit)", fContent: "Content",
  lbDelete: "Delete entry", lbConfirmDelete: (n) => `Delete entry “${n}”?`,
  lbConfirmImport: (name, n) => `Replace the lorebook with the ${n} entries of “${name}”? (and the memory and author's note, where the file has them)`,
  lbImported: (name, n, kind) => `Imported “${name}”: ${n} entries (${kind}).`,
  lbImportFailed: (name, m) => `“${name}” was not imported; nothing changed: ${m}`,
  lbStoryText: "The save's story text was put into the empty manuscript.",
  ctxRefresh: "Refresh", ctxNone: "This manuscript has no story settings: Continue reads the text itself (below, cleaned).",
  ctxUsed: (used, budget, stable) => `${used} / ${budget} chars used · stable prefix ${stable} chars (read once, then reused)`,
  ctxStory: (from, n) => `story: ${n} chars from char ${from}`,
  ctxEntries: "Entries that fired", ctxNoEntries: "No entry fired.", ctxUnmatched: (n) => `${n} more entries: keys not in the text.`,
  ctxSeed: (n) => `Probabilities rolled with seed ${n} (the seed in Settings; when it is empty, each continuation rolls anew).`,
  ctxParts: "Parts, in order", ctxText: "Everything the model reads", ctxWarnings: "Warnings",
  ctxStatus: { front: "always on · front", inserted: "inserted · near the end", dropped: "over budget, left out", blocked: "did not fire",
               unlucky: "probability missed", error: "error" },
  ctxKinds: { memory: "Memory", constant: "Always-on entry", story: "Story", entry: "Entry", note: "Author's note" },
};

addWords({ zh, en });

// The library's reports are "中文 / English": the half for the page's language
export const half = (s, lang) => {
  const i = String(s).indexOf(" / ");
  return i < 0 ? String(s) : lang === "zh" ? s.slice(0, i) : s.slice(i + 3);
};
