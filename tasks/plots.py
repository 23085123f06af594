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


LOSS_NAMES = {  # objective -> (title, y-axis)
    "autoencoder": ("Autoencoder training loss", "MSE on [0, 1]-scaled blocks"),
    "contrastive": ("Contrastive training loss", "NT-Xent (SimCLR) loss"),
}


def plot_loss(history: dict[str, list[float]], path: str | Path, title: str | None = None, objective: str = "autoencoder") -> Path:
    """Training (and validation) loss per epoch, like the report's Figure 8: the autoencoder's MSE, or
    the contrastive encoder's NT-Xent."""
    default_title, ylabel = LOSS_NAMES.get(objective, (f"{objective} training loss", "loss"))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(range(1, len(history[key]) + 1), history[key], label="training" if key == "loss" else "validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title or default_title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)
