"""A picture of a training run: the loss terms and the logit scale against the step, from the Trainer's log."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_training_curves"]


def plot_training_curves(log_history: list[dict], path: str | Path, title: str = "DiHT pre-training") -> list[str]:
    """Save a PNG with one panel per logged loss term and one for the logit scale.

    Args:
        log_history: `trainer.state.log_history`.
        path: where to write the PNG.
        title: figure title.

    Returns:
        The names of the curves drawn (`loss`, `contrastive_loss`, `concept_loss`, `logit_scale`, those present).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    names = [n for n in ("loss", "contrastive_loss", "concept_loss", "logit_scale")
             if any(n in entry for entry in log_history)]
    if not names:
        raise ValueError("the log history holds no training losses; was `logging_steps` larger than the run?")
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        steps = [entry["step"] for entry in log_history if name in entry]
        axis.plot(steps, [entry[name] for entry in log_history if name in entry], marker=".")
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return names
