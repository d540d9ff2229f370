"""The loss curve of a training run as a PNG (matplotlib, headless)."""
from __future__ import annotations

import os
from pathlib import Path


def plot_history(history: dict, path: Path) -> None:
    """history: {"train": [{"tokens", "loss"}…], "eval": [{"tokens", "nats_per_char"}…]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    train = history.get("train", [])
    if train:
        ax.plot([r["tokens"] / 1e6 for r in train], [r["loss"] for r in train], lw=1, label="train loss (nats/token)")
    ev = history.get("eval", [])
    if ev:
        ax.plot([r["tokens"] / 1e6 for r in ev], [r["nats_per_char"] for r in ev], "o-", label="held-out nats/char")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("nats")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
