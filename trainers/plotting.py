"""A picture of a training run: every logged loss term and the temperature against the step, from the Trainer's log."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_training_curves"]

# Keys of a training log that are not curves of the run's loss (the Trainer's own bookkeeping, the counters).
_NOT_CURVES = {"step", "epoch", "learning_rate", "grad_norm", "total_flos", "train_runtime", "train_samples_per_second",
               "train_steps_per_second", "train_loss"}


def plot_training_curves(log_history: list[dict], path: str | Path, title: str = "pre-training",
                         names: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[str]:
    """Save a PNG with one panel per logged quantity of the training logs (those with a `loss`).

    Args:
        log_history: `trainer.state.log_history`.
        path: where to write the PNG.
        title: figure title.
        names: the quantities to draw, in order (default: `loss`, then every other number the training logs carry,
            such as `contrastive_loss`, `concept_loss`, `logit_scale`).
        exclude: quantities not to draw by default (e.g. the collator's counters).

    Returns:
        The names of the curves drawn.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    training = [entry for entry in log_history if "loss" in entry]
    if not training:
        raise ValueError("the log history holds no training losses; was `logging_steps` larger than the run?")
    if names is None:
        found = dict.fromkeys(key for entry in training for key, value in entry.items()
                              if isinstance(value, (int, float)) and key not in _NOT_CURVES and key not in exclude)
        names = ["loss", *(key for key in found if key != "loss")]
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        steps = [entry["step"] for entry in training if name in entry]
        axis.plot(steps, [entry[name] for entry in training if name in entry], marker=".")
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return list(names)
