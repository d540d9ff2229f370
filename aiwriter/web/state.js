// The page's state, in one object (window.AIWriter: tests read it).
export const S = {
  config: null,
  doc: null,              // {id, title, revision} of the open manuscript
  savedText: "",          // the text the server confirmed last
  savedMarks: "",         // ... and its marks, as JSON
  dirty: false, saving: null, saveTimer: null, retryTimer: null, savedAt: null, offline: false,
  gen: null,              // the running generation
  busy: null,             // a chapter change on its way (chapters.js): no typing, no generation meanwhile
  marks: { ai: [], last: null },  // AI-written ranges and the last continuation (kept with the manuscript)
  rounds: [], round: -1,  // every set of candidates, for the retry history
  undo: [], redo: [], lastTyping: 0,
  versions: [], generations: [],
  trace: [],              // [time, length] after each streamed piece (tests read it)
  saveRetryMs: 10000,     // after a failed save (disk full): try again this much later
  tab: Math.random().toString(36).slice(2, 10) + Date.now().toString(36),  // this page's id for its drafts
};
window.AIWriter = S;
