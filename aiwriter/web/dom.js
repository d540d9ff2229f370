// Small DOM helpers shared by every module, and the banner above the editor.
export const $ = (id) => document.getElementById(id);
export const editor = $("editor");

// a message with buttons ([label, fn] pairs); × hides it
export function banner(message, kind = "", buttons = []) {
  const b = $("banner");
  b.className = "banner " + kind;
  b.replaceChildren();
  const span = document.createElement("span");
  span.textContent = message;
  b.append(span);
  for (const [label, fn] of buttons) {
    const btn = document.createElement("button");
    btn.type = "button"; btn.textContent = label;
    btn.onclick = () => { b.hidden = true; fn(); };
    b.append(btn);
  }
  const x = document.createElement("button");
  x.type = "button"; x.className = "icon"; x.textContent = "×"; x.onclick = () => { b.hidden = true; };
  b.append(x);
  b.hidden = false;
}

export function el(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}
