// Writing: 续写 / 换个写法 stream from /v1/completions into the manuscript (one candidate) or
// into cards (several); every round of candidates stays reachable.
import { ApiError, authFetch, describe, isOffline } from "./api.js";
import { $, banner, editor, el } from "./dom.js";
import { appendText, pushUndo, renderMarks, setText, updateCount, updateUndoButtons } from "./editor.js";
import { logGenerations } from "./history.js";
import { t } from "./i18n.js";
import { changed, save } from "./save.js";
import { requestBody } from "./settings.js";
import { S } from "./state.js";
import { promptFor } from "./context.js";
import { addRange, countChars } from "./text.js";

function setGenerating(on) {
  document.body.dataset.gen = on ? "running" : "idle";
  $("btn-continue").disabled = on; $("btn-rewrite").disabled = on; $("btn-stop").disabled = !on;
  editor.readOnly = on;
  updateUndoButtons();
}

export async function generate(mode) {
  if (S.gen || S.preparing || !S.doc || S.busy) return;  // S.busy: a chapter change is on its way (chapters.js)
  let base = editor.value;
  if (mode === "rewrite") {
    // the last continuation, kept with the manuscript, is replaced if it still ends the text unedited
    const last = S.marks.last;
    if (last && last[1] === editor.value.length) base = editor.value.slice(0, last[0]);
    else banner(t(last ? "nothingToRewrite" : "noLastContinuation"));
  }
  if (!base.trim()) { banner(t("emptyOpening")); editor.focus(); return; }
  const n = Math.max(1, Math.min(Number($("n").value) || 1, S.config ? S.config.max_n : 8));
  const body = requestBody(base, n);
  // with story settings the model reads the context the server assembles (memory first, entries
  // and the author's note near the end: context.js); the text itself otherwise
  S.preparing = true; editor.readOnly = true;  // the text stays as it was assembled from
  document.body.dataset.gen = "preparing";
  try { body.prompt = await promptFor(base, body.seed); } catch (e) { banner(describe(e), "error"); return; } finally {
    S.preparing = false; editor.readOnly = false;
    if (!S.gen) document.body.dataset.gen = "idle";
  }
  if (S.gen || !S.doc || (editor.value !== base && mode !== "rewrite")) return;  // another manuscript opened meanwhile
  const inline = n === 1;  // one continuation streams straight into the manuscript
  const round = { base, texts: Array(n).fill(""), picked: inline ? 0 : -1, done: false, model: body.model, settings: body };
  S.rounds.push(round); S.round = S.rounds.length - 1;
  // a rewrite takes the old continuation away only once the new one starts arriving
  const gen = { controller: new AbortController(), round, inline, replace: inline && base !== editor.value,
                t0: performance.now(), chars: 0, total: body.max_tokens, started: false };
  S.gen = gen; S.trace = [];
  clearTimeout(S.saveTimer);  // nothing is saved half-written
  setGenerating(true);
  $("gen-status").textContent = t("waiting");
  renderCandidates();
  let error = null;
  try {
    const res = await authFetch("/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: gen.controller.signal });
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      if (res.status === 429) throw new Error(t("busy", res.headers.get("Retry-After") || "?"));
      throw new ApiError(res.status, data);
    }
    gen.t0 = performance.now();
    await readEvents(res.body, (data) => {
      if (data.error) throw new ApiError(data.error.code || 500, data);
      for (const c of data.choices) if (c.text) onPiece(gen, c.index, c.text);
    });
  } catch (e) {
    if (e.name !== "AbortError") error = e;
  }
  finishGeneration(gen, error);
}

async function readEvents(stream, onData) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        onData(JSON.parse(payload));
      }
    }
  }
}

const candLabel = (i, text) => `${t("cand", i + 1)} · ${t("chars", countChars(text))}`;

function onPiece(gen, index, text) {
  gen.round.texts[index] += text;
  gen.chars += text.length;
  if (gen.inline) {
    if (!gen.started) {
      gen.started = true;
      if (gen.replace) { pushUndo(); setText(gen.round.base); } else pushUndo();
      gen.start = editor.value.length;
    }
    const atEnd = editor.scrollTop + editor.clientHeight >= editor.scrollHeight - 40;
    appendText(text, true);
    if (atEnd) editor.scrollTop = editor.scrollHeight;
    updateCount();
    S.trace.push([performance.now(), editor.value.length]);
  } else {
    const card = document.querySelector(`#cand-list .cand[data-index="${index}"]`);
    if (card) {
      const body = card.querySelector(".text");
      body.textContent += text; body.scrollTop = body.scrollHeight;
      card.querySelector(".meta .label").textContent = candLabel(index, gen.round.texts[index]);  // counted live
    }
    S.trace.push([performance.now(), gen.round.texts[index].length]);
  }
  const secs = (performance.now() - gen.t0) / 1000;
  const most = Math.max(...gen.round.texts.map(countChars));
  $("gen-status").textContent = t("writing", most, gen.total, secs > 0.5 ? Math.round(gen.chars / secs) : 0);
}

function finishGeneration(gen, error) {
  const round = gen.round;
  round.done = true;
  S.gen = null;
  setGenerating(false);
  const secs = ((performance.now() - gen.t0) / 1000).toFixed(1);
  const most = Math.max(...round.texts.map(countChars));
  const wrote = round.texts.some((s) => s);
  if (!wrote) {
    // nothing came (server down, refused, stopped at once): no empty round to page through
    S.rounds.splice(S.rounds.indexOf(round), 1);
    S.round = S.rounds.length - 1;
  }
  if (error) {
    $("gen-status").textContent = "";
    banner(isOffline(error) ? t("genOffline") : describe(error), "error");
  } else {
    $("gen-status").textContent = gen.controller.signal.aborted ? t("stopped", most) : t("done", most, secs);
  }
  if (gen.inline && wrote) {
    S.marks.last = [gen.start, editor.value.length];
    renderMarks();
  }
  changed();  // saves anything typed or left unsaved before the generation
  if (gen.inline && wrote) save("generation");
  if (wrote) logGenerations(round);
  renderCandidates();
  editor.focus();
}

export function stopGeneration() { if (S.gen) S.gen.controller.abort(); }

function pick(roundIndex, i) {
  if (S.gen) return;
  const round = S.rounds[roundIndex];
  pushUndo();
  round.picked = i;
  const text = round.base + round.texts[i];
  setText(text);
  S.marks = { ai: addRange(S.marks.ai, round.base.length, text.length), last: [round.base.length, text.length] };
  renderMarks();
  changed();
  save("generation");
  renderCandidates();
}

export function renderCandidates() {
  const box = $("candidates");
  const round = S.rounds[S.round];
  // one continuation written inline needs no panel until there is an earlier try to go back to
  if (!round || (S.rounds.length < 2 && round.texts.length === 1)) { box.hidden = true; return; }
  box.hidden = false;
  $("round-label").textContent = t("round", S.round + 1, S.rounds.length);
  $("round-prev").disabled = S.round <= 0;
  $("round-next").disabled = S.round >= S.rounds.length - 1;
  const list = $("cand-list");
  list.replaceChildren();
  round.texts.forEach((text, i) => {
    const card = el("div", "cand" + (round.picked === i ? " picked" : ""));
    card.dataset.index = i;
    const meta = el("div", "meta");
    const btn = el("button", "pick", round.picked === i ? t("picked") : t("pick"));
    btn.type = "button";
    btn.disabled = !round.done || !!S.gen;
    btn.onclick = () => pick(S.rounds.indexOf(round), i);
    meta.append(el("span", "label", candLabel(i, text)), btn);
    card.append(meta, el("div", "text", text));
    list.append(card);
  });
}

$("round-prev").onclick = () => { if (S.round > 0) { S.round--; renderCandidates(); } };
$("round-next").onclick = () => { if (S.round < S.rounds.length - 1) { S.round++; renderCandidates(); } };
$("cand-close").onclick = () => { $("candidates").hidden = true; };
