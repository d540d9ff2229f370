"""AI-Writer: continue Chinese novels with RWKV language models."""
import os
import sys

# Decoding one char is a short burst of small matmuls. With OpenMP's default busy-waiting, a
# second thread that meets any other load on the machine made writing ~100x slower (210 -> 2
# chars/s measured on 2 cores); passive waiting keeps both threads useful. Must precede torch.
USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # what the user had (the bench's yardsticks run with it)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# What OpenMP runs with: it reads the variable when torch loads, so torch loaded first keeps the user's.
OMP_WAIT_POLICY = USER_OMP_WAIT_POLICY if "torch" in sys.modules else os.environ["OMP_WAIT_POLICY"]
from aiwriter.errors import AIWriterError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["load_model", "Model", "State", "AIWriterError", "DEFAULT_MODEL", "__version__"]
_FROM_ENGINE = ("load_model", "Model", "State")


def __getattr__(name: str):
    """load_model, Model, State and DEFAULT_MODEL come from aiwriter.engine, which loads torch:
    imported on first use, so that `aiwriter --help` and every light module stay quick."""
    if name in _FROM_ENGINE or name == "DEFAULT_MODEL":
        from aiwriter import engine

        value = str(engine.default_model_path()) if name == "DEFAULT_MODEL" else getattr(engine, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aiwriter' has no attribute {name!r}")
