// The two side panels and the keys. On a narrow screen the panels are drawers over the editor;
// on a wide one ☰ and 设置 · 记录 hide and show them (remembered), for more room to write.
import { $, editor } from "./dom.js";
import { generate, stopGeneration } from "./generate.js";
import { redo, renderMarks, undo } from "./editor.js";
import { save } from "./save.js";
import { S } from "./state.js";

export const narrow = () => window.matchMedia("(max-width: 900px)").matches;
export function closeDrawers() { $("docs-panel").classList.remove("open"); $("side-panel").classList.remove("open"); }

function togglePanel(which) {
  const [mine, other] = which === "docs" ? ["docs-panel", "side-panel"] : ["side-panel", "docs-panel"];
  if (narrow()) {
    $(other).classList.remove("open");
    $(mine).classList.toggle("open");
  } else {
    const cls = `hide-${which}`;
    document.body.classList.toggle(cls);
    localStorage.setItem(`aiwriter.${cls}`, document.body.classList.contains(cls) ? "yes" : "no");
  }
  syncPanelButtons();
  renderMarks();  // the editor changed width
}

function syncPanelButtons() {
  const shown = (which, id) => (narrow() ? $(id).classList.contains("open") : !document.body.classList.contains(`hide-${which}`));
  $("btn-docs").setAttribute("aria-expanded", String(shown("docs", "docs-panel")));
  $("btn-side").setAttribute("aria-expanded", String(shown("side", "side-panel")));
}

for (const which of ["docs", "side"]) {
  if (localStorage.getItem(`aiwriter.hide-${which}`) === "yes") document.body.classList.add(`hide-${which}`);
}
syncPanelButtons();
window.matchMedia("(max-width: 900px)").addEventListener("change", syncPanelButtons);
$("btn-docs").onclick = () => togglePanel("docs");
$("btn-side").onclick = () => togglePanel("side");
editor.addEventListener("focus", () => { if (narrow()) closeDrawers(); });
for (const tab of document.querySelectorAll(".tab")) {
  tab.onclick = () => {
    for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
    for (const pane of document.querySelectorAll("#side-panel > .pane")) pane.hidden = pane.id !== `pane-${tab.dataset.tab}`;
    document.body.dataset.tab = tab.dataset.tab;  // style.css widens the panel for the story panes
  };
}
$("btn-continue").onclick = () => generate("continue");
$("btn-rewrite").onclick = () => generate("rewrite");
$("btn-stop").onclick = stopGeneration;
$("btn-undo").onclick = undo;
$("btn-redo").onclick = redo;

document.addEventListener("keydown", (e) => {
  if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyQ") { e.preventDefault(); generate("continue"); }
  else if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyE") { e.preventDefault(); generate("rewrite"); }
  else if (e.key === "Escape" && S.gen) { e.preventDefault(); stopGeneration(); }
  else if ((e.ctrlKey || e.metaKey) && !e.altKey && e.target === editor) {
    const k = e.key.toLowerCase();
    if (k === "z" && !e.shiftKey) { e.preventDefault(); undo(); }
    else if ((k === "z" && e.shiftKey) || k === "y") { e.preventDefault(); redo(); }
    else if (k === "s") { e.preventDefault(); save("save"); }
  }
});
