// Counting chars and keeping marked ranges (AI-written text, the last continuation) in place
// while the text is edited. Ranges are [start, end) in JavaScript string indices (UTF-16 units).

// One counting rule everywhere (header, manuscript list, versions, candidates, log; the server's
// `chars` uses the same): every character except spaces, tabs, line breaks and the ideographic space.
const BLANK = new Set([" ", "\t", "\r", "\n", "\u3000"]);
export function countChars(s) {
  let n = 0;
  for (const c of s) if (!BLANK.has(c)) n++;
  return n;
}

// The edit that turns `before` into `after`, as one replaced region: [start, oldEnd) -> [start, newEnd)
export function diff(before, after) {
  let start = 0;
  const max = Math.min(before.length, after.length);
  while (start < max && before.charCodeAt(start) === after.charCodeAt(start)) start++;
  let tail = 0;
  while (tail < max - start && before.charCodeAt(before.length - 1 - tail) === after.charCodeAt(after.length - 1 - tail)) tail++;
  return { start, oldEnd: before.length - tail, newEnd: after.length - tail };
}

// Ranges after an edit: text before the edit stays, text after it moves, replaced text loses its
// mark, and text typed in is not marked.
export function shiftRanges(ranges, edit) {
  const { start, oldEnd, newEnd } = edit;
  const delta = newEnd - oldEnd;
  const out = [];
  for (const [a, b] of ranges) {
    if (b <= start) out.push([a, b]);
    else if (a >= oldEnd) out.push([a + delta, b + delta]);
    else {
      if (a < start) out.push([a, start]);
      if (b > oldEnd) out.push([newEnd, b + delta]);
    }
  }
  return normalize(out);
}

// The last continuation survives only edits that do not touch it.
export function shiftRange(range, edit) {
  if (!range) return null;
  const [a, b] = range;
  const { start, oldEnd, newEnd } = edit;
  if (start >= b) return [a, b];                       // after it (typing on after it included)
  if (oldEnd <= a) return [a + newEnd - oldEnd, b + newEnd - oldEnd];  // before it
  return null;
}

// sorted, merged, non-empty
export function normalize(ranges) {
  const sorted = ranges.filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  const out = [];
  for (const [a, b] of sorted) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

export const addRange = (ranges, a, b) => normalize([...ranges.map((r) => [...r]), [a, b]]);

// marks from the server or a draft, checked against the text they belong to
export function validMarks(marks, text) {
  const ok = (r) => Array.isArray(r) && r.length === 2 && Number.isInteger(r[0]) && Number.isInteger(r[1])
    && r[0] >= 0 && r[0] < r[1] && r[1] <= text.length;
  const m = marks && typeof marks === "object" ? marks : {};
  return { ai: normalize((Array.isArray(m.ai) ? m.ai : []).filter(ok)), last: ok(m.last) ? [...m.last] : null };
}
