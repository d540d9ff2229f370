"""Getting a model (layer 5): the catalogue of BlinkDL releases known to work (catalog.py), what
each needs (shapes.py), downloading one into the models folder with huggingface_hub
(download.py), and what is already there (local.py)."""
