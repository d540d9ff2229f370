// The sampling settings the page offers, from the server's one list (/api/config
// "sampling_fields", made from aiwriter/sampling.py): name, range, step, label and a one-line
// explanation in zh and en. The page keeps no list of its own, so it cannot disagree.
//
// Each field: {name, type, default, min, max, min_exclusive, step, page_max, basic, label, help}.
// The slider spans [min, page_max] (the useful range); the number box takes the whole [min, max].
export function fieldsFrom(config) {
  const remote = config && config.sampling_fields;
  if (!Array.isArray(remote)) return [];
  return remote.filter((f) => f && typeof f.name === "string").map((f) => {
    const step = f.step || (f.type === "int" ? 1 : 0.01);
    const min = f.min_exclusive ? f.min + step : f.min;
    return {
      name: f.name, step, min, max: f.max, sliderMax: f.page_max ?? f.max, basic: f.basic !== false,
      label: { zh: (f.label && f.label.zh) || f.name, en: (f.label && f.label.en) || f.name },
      help: { zh: (f.help && f.help.zh) || "", en: (f.help && f.help.en) || "" },
    };
  });
}
