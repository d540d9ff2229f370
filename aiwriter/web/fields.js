// The sampling settings the page offers, with a one-line explanation each (zh and en).
// One list, in one place: once the server's /api/config describes its fields, those win
// (see fieldsFrom), so the page and the server cannot disagree.
export const SAMPLING_FIELDS = [
  { name: "temperature", min: 0.1, max: 2, step: 0.05,
    label: { zh: "温度", en: "Temperature" },
    help: { zh: "越高越大胆、越出人意料；越低越稳妥、越平淡。", en: "Higher: bolder, more surprising; lower: safer, plainer." } },
  { name: "top_p", min: 0, max: 1, step: 0.01,
    label: { zh: "top-p", en: "top-p" },
    help: { zh: "每个字只在最可能的那些字里挑（累计概率到这个数为止）：越小越保守，越大选择越多。",
            en: "Each char is picked only among the likeliest ones (up to this total probability): smaller is safer, larger gives more variety." } },
  { name: "top_p_newline", min: 0, max: 1, step: 0.01,
    label: { zh: "换行后的 top-p", en: "top-p after newline" },
    help: { zh: "新段落第一个字用的 top-p：大一些，每段的开头更多变化。",
            en: "The top-p for the first char of a new paragraph: larger lets paragraphs open in more varied ways." } },
  { name: "allow_p", min: 0, max: 0.1, step: 0.001,
    label: { zh: "总保留概率 ≥", en: "Always keep prob ≥" },
    help: { zh: "概率至少这么大的字总是可选，哪怕被 top-p 筛掉了（0 = 关）。",
            en: "Chars at least this likely always stay possible, even if top-p would drop them (0 = off)." } },
  { name: "top_k", min: 0, max: 200, step: 1,
    label: { zh: "top-k（0 关）", en: "top-k (0 off)" },
    help: { zh: "每个字最多在最可能的 k 个字里挑（0 = 不限）。", en: "Pick each char among at most the k likeliest (0 = no limit)." } },
  { name: "repetition_penalty", min: 0, max: 3, step: 0.1,
    label: { zh: "重复惩罚（2022 网页版）", en: "Repetition penalty (2022)" },
    help: { zh: "压低前文刚用过的字，少些车轱辘话（0 = 关）。", en: "Makes recently used chars less likely, against going in circles (0 = off)." } },
  { name: "presence_penalty", min: 0, max: 2, step: 0.05,
    label: { zh: "出现惩罚", en: "Presence penalty" },
    help: { zh: "出现过的字都少用一点，鼓励换新词。", en: "Every char that already appeared becomes a bit less likely: fresher wording." } },
  { name: "frequency_penalty", min: 0, max: 2, step: 0.05,
    label: { zh: "频率惩罚", en: "Frequency penalty" },
    help: { zh: "一个字出现得越多，再用它就越难。", en: "The more often a char appeared, the less likely it is again." } },
];

// The server's own description of a field ({name, min, max, step, label/help in zh and en, in
// any of the shapes below}) overrides this list field by field; fields the page has no
// control for are left out.
export function fieldsFrom(config) {
  const remote = config && (config.sampling_fields || config.fields);
  if (!Array.isArray(remote)) return SAMPLING_FIELDS;
  const byName = new Map(remote.filter((f) => f && typeof f.name === "string").map((f) => [f.name, f]));
  const pair = (v, zh, en, fallback) => ({
    zh: (v && v.zh) || zh || fallback.zh, en: (v && v.en) || en || fallback.en,
  });
  return SAMPLING_FIELDS.filter((f) => !byName.size || byName.has(f.name)).map((f) => {
    const r = byName.get(f.name);
    if (!r) return f;
    return {
      name: f.name,
      min: r.min ?? f.min, max: r.max ?? f.max, step: r.step ?? f.step,
      label: pair(r.label, r.label_zh, r.label_en, f.label),
      help: pair(r.help, r.help_zh, r.help_en, f.help),
    };
  });
}
