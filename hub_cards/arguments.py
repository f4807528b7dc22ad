"""The publishing arguments every training script parses (`transformers.HfArgumentParser`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PublishArguments", "hub_name"]


def hub_name(*sources: str | None) -> str | None:
    """The first of `sources` that names a Hub repository rather than a local path, for a card's `datasets` or
    `base_model` (a local folder means nothing to a reader of the Hub page); None when there is none.

    Example:
        >>> hub_name(None, ".", "google-bert/bert-base-uncased")   # "." is a local folder
        'google-bert/bert-base-uncased'
    """
    return next((source for source in sources if source and not Path(source).exists()), None)


@dataclass
class PublishArguments:
    """How a training script publishes its final model (with the Trainer's `--push_to_hub` and `--hub_model_id`)."""

    hub_dry_run: bool = field(default=False, metadata={
        "help": "With --push_to_hub (or alone): write the model card and list what would be uploaded; upload nothing."})
    license: str | None = field(default=None, metadata={
        "help": "License id of the model card's metadata (default: the recipe's, apache-2.0 for trained models)."})
