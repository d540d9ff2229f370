#!/bin/sh
# The README's state-tuning figures: tune a start state on 儒林外史 (held out of the default model's
# training data) for 10 CPU minutes on one thread, then score it on the book's held-out last tenth
# (windows of 64 / 256 / 1024 chars) and write one sample each way (seed 2026).
#
#   sh benchmarks/state_tuning_rulin.sh [BOOK.txt] [MODEL.pth] [OUT.pth]
#
# Run from the repository root. Defaults: ../shared's copy of 儒林外史, the embedded default model,
# examples/states/rulinwaishi.pth, the project's .venv python (PYTHON=... to change it).
# Extra flags for `aiwriter train` can be given in STATE_FLAGS (e.g. STATE_FLAGS="--state-lr 1").
set -e
BOOK=${1:-../shared/corpus/heldout/儒林外史.txt}
MODEL=${2:-aiwriter/default_model/model.pth}
OUT=${3:-examples/states/rulinwaishi.pth}
# the project's venv (install.sh) unless PYTHON says otherwise: a bare `python` may lack torch
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PY=${PYTHON:-python}
export OMP_WAIT_POLICY=PASSIVE
# shellcheck disable=SC2086
$PY -m aiwriter train --state-only --init "$MODEL" --data "$BOOK" --out "$OUT" \
    --max-cpu-minutes 10 --threads 1 --no-progress $STATE_FLAGS
$PY benchmarks/state_tuning_eval.py "$OUT" "$BOOK" --model "$MODEL" --opening "　　话说范进回到家中，"
