// Every word the page shows, in Chinese and English, and the current language.
export const WORDS = {
  zh: {
    documents: "文稿", new: "新建", rename: "重命名", delete: "删除", export: "导出 .txt", versions: "版本历史",
    titlePlaceholder: "文稿标题", editorPlaceholder: "在这里写下开头，然后按「续写」（Alt+Q）。",
    continue: "续写", stop: "停止", rewrite: "换个写法", undo: "撤销", redo: "重做", undoKey: "Ctrl+Z", redoKey: "Ctrl+Shift+Z",
    length: "字数", candidates: "候选", settingsHistory: "设置 · 记录", settings: "设置", history: "生成记录",
    model: "模型", preset: "预设", presetSave: "存为预设", presetDelete: "删除预设", seed: "随机种子（空 = 随机）",
    stopAt: "遇到这些文字就停（用 | 分隔）", historyHint: "每次生成的文字都记在这里，点开看全文。",
    finishSentence: "写完整句（最多多写 40 字）", moreSettings: "更多设置", markAi: "标出 AI 写的字",
    restore: "恢复这个版本", close: "关闭", earlier: "上一次", later: "下一次",
    chars: (n) => `${n} 字`, saved: () => "已保存 ", saving: "保存中…", unsaved: "未保存（已暂存在浏览器）",
    offline: "连不上服务器：文字已暂存在浏览器，稍后自动重试", waiting: "等待服务器…",
    writing: (n, total, speed) => `正在写… ${n}/${total} 字${speed ? ` · ${speed} 字/秒` : ""}`,
    done: (n, s) => `写了 ${n} 字，用时 ${s} 秒`, stopped: (n) => `已停止，保留了 ${n} 字`,
    emptyOpening: "先写一个开头。", nothingToRewrite: "最后一段续写已经改动过了，这次按续写处理。",
    noLastContinuation: "文末不是一段未改动的续写（或这篇文稿还没有续写过），这次按续写处理。",
    round: (i, n) => `第 ${i}/${n} 次`, pick: "选这个", picked: "已选", cand: (i) => `候选 ${i}`,
    busy: (s) => `服务器忙，请 ${s} 秒后再试`, confirmDelete: (t) => `删除「${t}」？它的版本历史也会一起删除，无法恢复。`,
    renamePrompt: "新的标题：", presetName: "预设名称：", untitled: "未命名文稿",
    draftFound: (t) => `浏览器里有一份未保存的稿子（${t}），和服务器上的不一样：服务器上的在那之后也改过。`, useDraft: "用浏览器里的", dropDraft: "丢弃",
    draftRestored: (t) => `已恢复浏览器里暂存的文字（${t}），正在保存到服务器。`,
    conflict: "这篇文稿在别处（另一个标签页？）被修改过了。", keepMine: "用我的覆盖", loadTheirs: "载入服务器上的",
    reasons: { create: "新建", autosave: "自动保存", save: "保存", generation: "生成后", restore: "恢复" },
    append: "追加到文末", copy: "复制", presets: { seed: "种子默认", steady: "稳妥", bold: "奔放", browser2022: "2022 网页版" },
    loadFailed: "读取失败：", error: "出错了：", apiKeyPrompt: "这个服务器需要 API 密钥（启动时的 --api-key）：",
    saveFailed: (m) => `保存失败：${m}。文字仍暂存在浏览器里，稍后自动重试。`,
    genOffline: "连不上服务器，这次没有续写。服务器启动后再按「续写」。",
    connecting: "连不上服务器，正在重试…（文字都暂存在浏览器里）",
  },
  en: {
    documents: "Manuscripts", new: "New", rename: "Rename", delete: "Delete", export: "Export .txt", versions: "Versions",
    titlePlaceholder: "Title", editorPlaceholder: "Write an opening here, then press Continue (Alt+Q).",
    continue: "Continue", stop: "Stop", rewrite: "Rewrite", undo: "Undo", redo: "Redo", undoKey: "Ctrl+Z", redoKey: "Ctrl+Shift+Z",
    length: "Chars", candidates: "Candidates", settingsHistory: "Settings · Log", settings: "Settings", history: "Log",
    model: "Model", preset: "Preset", presetSave: "Save preset", presetDelete: "Delete preset", seed: "Seed (empty = random)",
    stopAt: "Stop at (separate with |)", historyHint: "Every generation is logged here; click one to read it all.",
    finishSentence: "Finish the sentence (up to 40 more chars)", moreSettings: "More settings", markAi: "Mark AI-written text",
    restore: "Restore this version", close: "Close", earlier: "Earlier", later: "Later",
    chars: (n) => `${n} chars`, saved: () => "Saved ", saving: "Saving…", unsaved: "Not saved (kept in this browser)",
    offline: "Cannot reach the server: the text is kept in this browser; retrying", waiting: "Waiting for the server…",
    writing: (n, total, speed) => `Writing… ${n}/${total}${speed ? ` · ${speed} chars/s` : ""}`,
    done: (n, s) => `Wrote ${n} chars in ${s} s`, stopped: (n) => `Stopped; kept ${n} chars`,
    emptyOpening: "Write an opening first.", nothingToRewrite: "The last continuation was edited; continuing instead.",
    noLastContinuation: "The end of the text is not an unedited continuation (or nothing was generated yet); continuing instead.",
    round: (i, n) => `Try ${i}/${n}`, pick: "Pick", picked: "Picked", cand: (i) => `Candidate ${i}`,
    busy: (s) => `The server is busy; retry in ${s} s`, confirmDelete: (t) => `Delete “${t}” and its versions? This cannot be undone.`,
    renamePrompt: "New title:", presetName: "Preset name:", untitled: "Untitled",
    draftFound: (t) => `This browser holds unsaved text (${t}) that differs from the server's, which has also changed since.`, useDraft: "Use the browser's", dropDraft: "Discard",
    draftRestored: (t) => `Restored the text kept in this browser (${t}); saving it to the server.`,
    conflict: "This manuscript was changed elsewhere (another tab?).", keepMine: "Keep mine", loadTheirs: "Load the server's",
    reasons: { create: "created", autosave: "autosave", save: "saved", generation: "after writing", restore: "restored" },
    append: "Append", copy: "Copy", presets: { seed: "Seed defaults", steady: "Steady", bold: "Bold", browser2022: "2022 browser" },
    loadFailed: "Could not load: ", error: "Error: ", apiKeyPrompt: "This server requires its API key (--api-key):",
    saveFailed: (m) => `Not saved: ${m}. The text is kept in this browser; retrying.`,
    genOffline: "Cannot reach the server; nothing was written. Press Continue once it is running.",
    connecting: "Cannot reach the server; retrying… (all text is kept in this browser)",
  },
};

// a panel module brings its own words: addWords({zh: {...}, en: {...}}) when it loads
export function addWords(words) {
  for (const l of ["zh", "en"]) Object.assign(WORDS[l], words[l]);
}

export let lang = localStorage.getItem("aiwriter.lang") === "en" ? "en" : "zh";

export function setLang(value) {
  lang = value;
  localStorage.setItem("aiwriter.lang", lang);
}

export const t = (key, ...args) => { const w = WORDS[lang][key]; return typeof w === "function" ? w(...args) : w; };

export const locale = () => (lang === "zh" ? "zh-CN" : "en-GB");

export const clock = (ts) => new Date(ts * 1000).toLocaleString(locale(), { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
