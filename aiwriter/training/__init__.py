"""Training and evaluation: `aiwriter train` (train.py), `aiwriter eval` (evaluate.py)."""
