// 设置: model, sampling fields (with a one-line explanation each), presets, length, candidates,
// seed, stop strings, finishing the sentence, marking AI text. All kept in this browser.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { marksOn, setMarksOn } from "./editor.js";
import { fieldsFrom } from "./fields.js";
import { lang, t } from "./i18n.js";
import { S } from "./state.js";
import { chosenState } from "./states.js";

const BUILTIN_PRESETS = {
  seed: {},  // the server's defaults: the seed's top_p 0.75, top_p_newline 0.9, temperature 1.0
  steady: { top_p: 0.6, top_p_newline: 0.8, temperature: 0.9 },
  bold: { top_p: 0.9, top_p_newline: 0.95, temperature: 1.1 },
  browser2022: { allow_p: 0.01 },
};
export const FINISH_SENTENCE_CHARS = 40;  // the most extra chars to finish a sentence
const PRESET_KEY = "aiwriter.preset";
let sampling = {};

const fields = () => fieldsFrom(S.config);

function defaults() {
  const d = S.config ? S.config.defaults : {};
  return Object.fromEntries(fields().filter((f) => f.name in d).map((f) => [f.name, d[f.name]]));
}

export function loadSampling() {
  sampling = { ...defaults(), ...JSON.parse(localStorage.getItem("aiwriter.sampling") || "{}") };
}

function storeSampling() { localStorage.setItem("aiwriter.sampling", JSON.stringify(sampling)); }

function choosePreset(value) {
  $("preset").value = value;
  localStorage.setItem(PRESET_KEY, value);
}

export function renderSampling() {
  const box = $("sampling");
  box.replaceChildren();
  // the everyday fields first; the rest (top-a, min-p, penalty decay) folded under 更多
  const more = el("details", "more");
  more.append(el("summary", "", t("moreSettings")));
  for (const { name, min, max, sliderMax, step, label, help, basic } of fields()) {
    const field = el("label", "field");
    const num = el("input");
    Object.assign(num, { type: "number", min, max, step, value: sampling[name] ?? "" });
    num.id = `s-${name}`;
    const range = el("input");
    Object.assign(range, { type: "range", min, max: sliderMax, step, value: sampling[name] ?? min });
    range.setAttribute("aria-label", label[lang]);
    const set = (v) => {
      const x = Number(v);
      if (v === "" || !Number.isFinite(x)) return;
      sampling[name] = x; num.value = x; range.value = x; storeSampling(); choosePreset("");
    };
    num.onchange = () => set(num.value);
    range.oninput = () => set(range.value);
    const hint = el("small", "help", help[lang]);
    hint.id = `help-${name}`;
    num.setAttribute("aria-describedby", hint.id);
    field.append(el("span", "", label[lang]), num, range, hint);
    (basic ? box : more).append(field);
  }
  if (more.children.length > 1) box.append(more);
}

function userPresets() { return JSON.parse(localStorage.getItem("aiwriter.presets") || "{}"); }

export function renderPresets() {
  const sel = $("preset");
  sel.replaceChildren(new Option("—", ""));
  for (const key of Object.keys(BUILTIN_PRESETS)) sel.append(new Option(t("presets")[key], `builtin:${key}`));
  for (const name of Object.keys(userPresets())) sel.append(new Option(name, `user:${name}`));
  // the preset in force survives a reload (its values are in force too: they are stored)
  const current = localStorage.getItem(PRESET_KEY) || "";
  sel.value = [...sel.options].some((o) => o.value === current) ? current : "";
}

$("preset").onchange = () => {
  const v = $("preset").value;
  localStorage.setItem(PRESET_KEY, v);
  if (!v) return;
  const [kind, name] = [v.slice(0, v.indexOf(":")), v.slice(v.indexOf(":") + 1)];
  const values = kind === "builtin" ? BUILTIN_PRESETS[name] : userPresets()[name];
  sampling = { ...defaults(), ...values };
  storeSampling(); renderSampling();
};
$("preset-save").onclick = () => {
  const name = prompt(t("presetName"));
  if (!name || !name.trim()) return;
  const all = userPresets();
  all[name.trim()] = { ...sampling };
  localStorage.setItem("aiwriter.presets", JSON.stringify(all));
  localStorage.setItem(PRESET_KEY, `user:${name.trim()}`);
  renderPresets();
};
$("preset-delete").onclick = () => {
  const v = $("preset").value;
  if (!v.startsWith("user:")) return;
  const all = userPresets();
  delete all[v.slice(5)];
  localStorage.setItem("aiwriter.presets", JSON.stringify(all));
  localStorage.setItem(PRESET_KEY, "");
  renderPresets();
};

export async function loadModels() {
  const data = await api("GET", "/v1/models");
  const sel = $("model");
  const saved = localStorage.getItem("aiwriter.model");
  sel.replaceChildren();
  for (const m of data.data) sel.append(new Option(m.id, m.id));
  const loaded = data.data.find((m) => m.loaded);
  sel.value = data.data.some((m) => m.id === saved) ? saved : (loaded ? loaded.id : data.data[0].id);
}
$("model").onchange = () => localStorage.setItem("aiwriter.model", $("model").value);

for (const id of ["length", "n", "seed", "stop-strings"]) {
  const input = $(id);
  const key = `aiwriter.${id}`;
  if (localStorage.getItem(key) !== null) input.value = localStorage.getItem(key);
  input.addEventListener("change", () => localStorage.setItem(key, input.value));
}

// on/off options (on unless turned off)
$("finish-sentence").checked = localStorage.getItem("aiwriter.finishSentence") !== "no";
$("finish-sentence").onchange = () => localStorage.setItem("aiwriter.finishSentence", $("finish-sentence").checked ? "yes" : "no");
$("mark-ai").checked = marksOn();
$("mark-ai").onchange = () => setMarksOn($("mark-ai").checked);

export function requestBody(prompt, n) {
  const length = Math.max(1, Math.min(Number($("length").value) || 200, S.config ? S.config.max_length : 10000));
  const body = { prompt, max_tokens: length, n, stream: true, model: $("model").value };
  for (const { name } of fields()) if (sampling[name] !== undefined) body[name] = sampling[name];
  const seed = $("seed").value.trim();
  if (seed !== "" && Number.isInteger(Number(seed))) body.seed = Number(seed);
  const stops = $("stop-strings").value.split("|").filter((s) => s);
  if (stops.length) body.stop = stops;
  if ($("finish-sentence").checked) body.finish_sentence = FINISH_SENTENCE_CHARS;
  const state = chosenState();
  if (state) body.state = state;
  return body;
}
