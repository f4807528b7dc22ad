"""The training procedure a card reports: HN-NCE α/β, concept distillation and the optimisation settings.

DiHT (Radenovic et al., CVPR 2023, arXiv 2301.02280) trains with the HN-NCE loss (PAPERS.md §1.2) plus a
concept-distillation loss (§1.4). The paper publishes neither α, β nor the concept-loss weight, so a card states
the values its run used, and only those it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from transformers import TrainingArguments

__all__ = ["TRAINING_FIELDS", "format_value", "training_from", "training_rows"]

# The settings a card knows, with their labels, in the order it lists them.
TRAINING_FIELDS: dict[str, str] = {
    "hn_nce_alpha": "HN-NCE α",
    "hn_nce_beta": "HN-NCE β",
    "hn_nce_detach_weights": "HN-NCE weights detached",
    "concept_loss_weight": "concept-distillation loss weight",
    "concept_teacher": "concept teacher",
    "concept_vocabulary_size": "concept vocabulary size",
    "max_steps": "optimizer steps",
    "num_train_epochs": "epochs",
    "global_batch_size": "global batch size (pairs per step)",
    "learning_rate": "peak learning rate",
    "lr_scheduler_type": "learning-rate schedule",
    "warmup_steps": "warm-up steps",
    "weight_decay": "weight decay",
    "optimizer": "optimizer",
    "precision": "precision",
    "max_logit_scale": "logit-scale clamp (max 1/τ)",
    "seed": "seed",
}
# Keys of a plain dict that combine into `global_batch_size`.
_BATCH_PARTS = ("per_device_train_batch_size", "gradient_accumulation_steps", "world_size")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value  # SchedulerType, OptimizerNames


def _from_training_arguments(args: TrainingArguments) -> dict[str, Any]:
    settings: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("hn_nce_alpha", "hn_nce_beta", "concept_loss_weight", "max_logit_scale")  # DiHT's arguments
        if getattr(args, name, None) is not None
    }
    if getattr(args, "hn_nce_detach_weights", False):
        settings["hn_nce_detach_weights"] = True
    if args.max_steps and args.max_steps > 0:
        settings["max_steps"] = args.max_steps
    else:  # the Trainer runs epochs only when max_steps is unset
        settings["num_train_epochs"] = args.num_train_epochs
    # A step consumes this many pairs; world_size counts the processes of the run that built the arguments.
    settings["global_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    settings["learning_rate"] = args.learning_rate
    settings["lr_scheduler_type"] = _plain(args.lr_scheduler_type)
    if args.warmup_steps:
        settings["warmup_steps"] = args.warmup_steps
    settings["weight_decay"] = args.weight_decay
    settings["optimizer"] = _plain(args.optim)
    settings["precision"] = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    settings["seed"] = args.seed
    return settings


def _from_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    settings = {key: _plain(value) for key, value in values.items() if value is not None and key not in _BATCH_PARTS}
    if "global_batch_size" not in settings and values.get("per_device_train_batch_size"):
        settings["global_batch_size"] = (values["per_device_train_batch_size"]
                                         * values.get("gradient_accumulation_steps", 1) * values.get("world_size", 1))
    return settings


def training_from(training: TrainingArguments | Mapping[str, Any] | None) -> dict[str, Any]:
    """The training settings a card reports, from a run's `TrainingArguments` or a dict.

    From `TrainingArguments` (`DiHTTrainingArguments` adds α, β, the concept-loss weight and the logit-scale
    clamp): steps (or epochs), global batch = per-device batch × gradient accumulation × processes, learning rate,
    schedule, warm-up, weight decay, optimizer, precision, seed. A dict is taken as given (keys of
    `TRAINING_FIELDS`, plus any other key, listed under "other settings"); `per_device_train_batch_size`,
    `gradient_accumulation_steps` and `world_size` combine into `global_batch_size`. `None` values are dropped, so
    a card shows only what was provided. Neither α, β nor the concept weight is confirmed by the paper (PAPERS.md
    §1.2, §1.4): the card reports the run's values.

    Args:
        training: the arguments of the run, a dict, or None.

    Returns:
        Setting names to plain values (enums become their strings).

    Example:
        >>> training_from({"hn_nce_alpha": 1.0, "hn_nce_beta": 0.5, "per_device_train_batch_size": 256,
        ...                "world_size": 8, "learning_rate": None})
        {'hn_nce_alpha': 1.0, 'hn_nce_beta': 0.5, 'global_batch_size': 2048}
    """
    if training is None:
        return {}
    if isinstance(training, TrainingArguments):
        return _from_training_arguments(training)
    if isinstance(training, Mapping):
        return _from_mapping(training)
    raise TypeError(f"training must be TrainingArguments, a dict or None, got {type(training).__name__}")


def training_rows(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`(label, value)` rows of the card's training table: known settings in `TRAINING_FIELDS` order, then others."""
    known = [(TRAINING_FIELDS[key], format_value(settings[key])) for key in TRAINING_FIELDS if key in settings]
    others = [(key, format_value(value)) for key, value in settings.items() if key not in TRAINING_FIELDS]
    return known + others


def format_value(value: Any) -> str:
    """A setting as the card prints it: floats in shortest form (5e-4 → 0.0005, 1.0 → 1), large ints with commas."""
    if isinstance(value, float):
        return f"{value:g}"  # 5e-4 stays 0.0005, 1.0 becomes 1
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)
