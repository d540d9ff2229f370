// 起始状态 / start state: a state file from the server's states folder (GET /api/states) that the
// model starts from before it reads the manuscript (RWKV-Runner time_state files, a 文风 tuned by
// `aiwriter train --state-only`). The choice is kept per manuscript in this browser
// (aiwriter.state.<id>) and sent as `state` with 续写 / 换个写法 (settings.js requestBody).
import { api } from "./api.js";
import { $ } from "./dom.js";
import { addWords, t } from "./i18n.js";
import { S } from "./state.js";

addWords({
  zh: {
    startState: "起始状态（文风）", stateNone: "无（从空状态开始）",
    stateHelp: "模型先载入这个状态，再读文稿；调校过的状态能带来一种文风。每篇文稿各记各的。",
    stateEmpty: "还没有状态文件。状态文件夹是 aiwriter serve --models-dir 模型文件夹 旁边的 states 文件夹（或 --states-dir 指定的文件夹），" +
      "把 .pth / .safetensors 状态文件放进去；也可以用 aiwriter train --state-only --init 模型 --data 我的小说/ --out states/文风.pth 调校一个。",
    stateMissing: (n) => `${n}（已不在 states 文件夹里）`,
  },
  en: {
    startState: "Start state (style)", stateNone: "None (an empty state)",
    stateHelp: "The model loads this state before it reads the manuscript; a tuned state brings a style. Kept per manuscript.",
    stateEmpty: "No state files yet. The states folder is the “states” folder beside the models folder of " +
      "aiwriter serve --models-dir FOLDER (or the one given by --states-dir): put .pth / .safetensors state files there, " +
      "or tune one with aiwriter train --state-only --init MODEL --data my-novel/ --out states/style.pth.",
    stateMissing: (n) => `${n} (no longer in the states folder)`,
  },
});

const KEY = (id) => `aiwriter.state.${id}`;
let names = null;      // the server's list (null: not asked yet)
let shownFor = null;   // the manuscript the select shows the choice of

const stored = () => (S.doc ? localStorage.getItem(KEY(S.doc.id)) || "" : "");

// the state to send: the manuscript's choice, if the server still lists it
export function chosenState() {
  const name = stored();
  return name && names && names.includes(name) ? name : null;
}

export async function loadStates() {
  let list;
  try { list = (await api("GET", "/api/states")).states; } catch (e) { return; }
  if (names && list.join("\n") === names.join("\n")) return;
  names = list;
  renderStates();
}

export function renderStates() {
  const sel = $("state");
  shownFor = S.doc ? S.doc.id : null;
  const current = stored();
  sel.replaceChildren(new Option(t("stateNone"), ""));
  for (const n of names || []) sel.append(new Option(n, n));
  // a chosen file that went away stays visible (and is not sent), so the choice is not lost silently
  if (current && names && !names.includes(current)) {
    const o = new Option(t("stateMissing", current), current);
    o.disabled = true;
    sel.append(o);
  }
  sel.value = current;
  $("state-help").textContent = t("stateHelp");
  const hint = $("state-hint");
  hint.hidden = !names || names.length > 0;
  hint.textContent = t("stateEmpty");
}

$("state").onchange = () => {
  if (!S.doc) return;
  const v = $("state").value;
  if (v) localStorage.setItem(KEY(S.doc.id), v); else localStorage.removeItem(KEY(S.doc.id));
};
// files may have been added since: ask again when the writer goes to pick one
$("state").addEventListener("focus", loadStates);
// another manuscript opened: show its choice
setInterval(() => { if (S.doc && S.doc.id !== shownFor) renderStates(); }, 300);
