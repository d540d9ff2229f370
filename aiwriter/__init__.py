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
from aiwriter.engine import Model, State, default_model_path, load_model
from aiwriter.errors import AIWriterError

__version__ = "0.1.0"
DEFAULT_MODEL = str(default_model_path())

__all__ = ["load_model", "Model", "State", "AIWriterError", "DEFAULT_MODEL", "__version__"]
