"""Training arguments shared by the contrastive vision-language recipes of this package.

`ContrastiveTrainingArguments` holds what every image-text recipe needs (image-friendly defaults, the declared
parameter clamps); each recipe subclasses it with its own terms (`trainers.DiHTTrainingArguments`, arXiv
2301.02280).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["ContrastiveTrainingArguments"]


@dataclass
class ContrastiveTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults for image-text data.

    Changed defaults: `remove_unused_columns=False` (the Trainer would otherwise drop the image column before the
    collator decodes it), `dataloader_drop_last=True` (a contrastive batch of one pair has no negative) and
    `ddp_find_unused_parameters=False` (the trainers keep every parameter in the graph).
    """

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep all dataset columns for the collator (images are decoded there)."}
    )
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Drop the last incomplete batch (contrastive losses need full batches)."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP's search for unused parameters; off because every parameter takes part in the loss "
                          "(idle heads are kept in the graph), which saves a graph traversal per step."},
    )
    clamp_parameters: bool = field(
        default=True,
        metadata={"help": "Clamp the parameters the model declares in `clamped_parameters()` (its temperature) after "
                          "every optimizer step."},
    )
