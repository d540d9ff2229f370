"""AI-Writer: continue Chinese novels with RWKV language models."""
from aiwriter.engine import Model, State, default_model_path, load_model
from aiwriter.errors import AIWriterError

__version__ = "0.1.0"
DEFAULT_MODEL = str(default_model_path())

__all__ = ["load_model", "Model", "State", "AIWriterError", "DEFAULT_MODEL", "__version__"]
