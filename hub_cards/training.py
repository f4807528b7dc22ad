"""The training procedure a card reports: the optimisation settings and the recipe's own (its loss's config).

A card states the values its run used, and only those it was given. Generic settings come from the run's
`TrainingArguments` (steps, global batch, learning rate, schedule, precision...); the recipe's settings (DiHT's
HN-NCE α/β and concept weight, arXiv 2301.02280, neither published by the paper) come from the same arguments or
from the loss's `get_config_dict()`, labelled by the recipe's `CardRecipe.training_labels`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from transformers import TrainingArguments

__all__ = ["TRAINING_FIELDS", "format_value", "training_from", "training_rows"]

# The generic settings a card knows, with their labels, in the order it lists them (after the recipe's own).
TRAINING_FIELDS: dict[str, str] = {
    "max_steps": "optimizer steps",
    "num_train_epochs": "epochs",
    "global_batch_size": "global batch size (pairs per step)",
    "learning_rate": "peak learning rate",
    "lr_scheduler_type": "learning-rate schedule",
    "warmup_steps": "warm-up steps",
    "weight_decay": "weight decay",
    "optimizer": "optimizer",
    "precision": "precision",
    "seed": "seed",
}
# Keys of a plain dict that combine into `global_batch_size`.
_BATCH_PARTS = ("per_device_train_batch_size", "gradient_accumulation_steps", "world_size")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value  # SchedulerType, OptimizerNames


def _from_training_arguments(args: TrainingArguments, recipe_fields: Iterable[str]) -> dict[str, Any]:
    values = {name: getattr(args, name, None) for name in recipe_fields}
    settings: dict[str, Any] = {name: _plain(value) for name, value in values.items()
                                if value is not None and value is not False}  # a False flag is the default
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


def training_from(training: TrainingArguments | Mapping[str, Any] | None, recipe_fields: Iterable[str] = (),
                  loss_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training settings a card reports, from a run's `TrainingArguments` or a dict, and its loss's config.

    From `TrainingArguments`: the recipe's fields present on them (`recipe_fields`, e.g. DiHT's `hn_nce_alpha`),
    then steps (or epochs), global batch = per-device batch × gradient accumulation × processes, learning rate,
    schedule, warm-up, weight decay, optimizer, precision, seed. A dict is taken as given;
    `per_device_train_batch_size`, `gradient_accumulation_steps` and `world_size` combine into `global_batch_size`.
    `loss_config` (the loss's `get_config_dict()`) overrides both. `None` values are dropped.

    Args:
        training: the arguments of the run, a dict, or None.
        recipe_fields: the recipe's setting names to read from `TrainingArguments`.
        loss_config: the training loss's settings.

    Returns:
        Setting names to plain values (enums become their strings).

    Example:
        >>> training_from({"hn_nce_alpha": 1.0, "hn_nce_beta": 0.5, "per_device_train_batch_size": 256,
        ...                "world_size": 8, "learning_rate": None})
        {'hn_nce_alpha': 1.0, 'hn_nce_beta': 0.5, 'global_batch_size': 2048}
    """
    if training is None:
        settings = {}
    elif isinstance(training, TrainingArguments):
        settings = _from_training_arguments(training, recipe_fields)
    elif isinstance(training, Mapping):
        settings = _from_mapping(training)
    else:
        raise TypeError(f"training must be TrainingArguments, a dict or None, got {type(training).__name__}")
    settings.update({key: _plain(value) for key, value in (loss_config or {}).items() if value is not None})
    return settings


def training_rows(settings: Mapping[str, Any], recipe_labels: Mapping[str, str] | None = None
                  ) -> list[tuple[str, str]]:
    """`(label, value)` rows of the card's training table: the recipe's settings, the generic ones, then others."""
    labels = {**(recipe_labels or {}), **TRAINING_FIELDS}
    known = [(labels[key], format_value(settings[key])) for key in labels if key in settings]
    others = [(key, format_value(value)) for key, value in settings.items() if key not in labels]
    return known + others


def format_value(value: Any) -> str:
    """A setting as the card prints it: floats in shortest form (5e-4 → 0.0005, 1.0 → 1), large ints with commas."""
    if isinstance(value, float):
        return f"{value:g}"  # 5e-4 stays 0.0005, 1.0 becomes 1
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)
