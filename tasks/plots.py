"""Figures, as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> Path:
    """Lay out, write and close a figure; returns the path."""
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return Path(path)


def plot_loss(history: dict[str, list[float]], path: str | Path, title: str = "Autoencoder training loss") -> Path:
    """Training (and validation) MSE per epoch, like the report's Figure 8."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(range(1, len(history[key]) + 1), history[key], label="training" if key == "loss" else "validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE on [0, 1]-scaled blocks")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)
