"""Training arguments for contrastive vision-language pre-training (shared), and DiHT's own.

`ContrastiveTrainingArguments` holds what every image-text recipe of this package needs (image-friendly defaults,
the logit-scale clamp); `DiHTTrainingArguments` adds HN-NCE and concept distillation (arXiv 2301.02280). A COSMO
recipe subclasses the shared one with its own terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["ContrastiveTrainingArguments", "DiHTTrainingArguments"]


@dataclass
class ContrastiveTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults for image-text data, and the logit-scale clamp of CLIP training.

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
                          "(idle concept heads are kept in the graph), which saves a graph traversal per step."},
    )
    max_logit_scale: float = field(
        default=100.0,
        metadata={"help": "Clamp exp(logit_scale), the inverse temperature, to [1, this] after every optimizer step "
                          "(CLIP's 100); 0 disables the clamp."},
    )


@dataclass
class DiHTTrainingArguments(ContrastiveTrainingArguments):
    """Arguments of [`DiHTTrainer`]: HN-NCE over the global batch and concept distillation (arXiv 2301.02280).

    The paper publishes neither its HN-NCE alpha/beta nor its concept-loss weight; the defaults are the third-party
    ports' alpha=1, beta=0.5 and an unweighted sum of the two losses.
    """

    hn_nce_alpha: float = field(
        default=1.0, metadata={"help": "HN-NCE alpha, weight of the positive in the denominator (0: decoupled)."}
    )
    hn_nce_beta: float = field(
        default=0.5, metadata={"help": "HN-NCE beta, hardness of the negative weighting (0 with alpha=1: InfoNCE)."}
    )
    hn_nce_chunk_size: int | None = field(
        default=None, metadata={"help": "Anchors per block of the tiled HN-NCE (O(B*chunk) memory); None: dense."}
    )
    hn_nce_detach_weights: bool = field(
        default=False, metadata={"help": "Treat the hard-negative weights as constants in backward."}
    )
    concept_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of the concept-distillation loss added to HN-NCE (0 disables it)."}
    )
    concept_head: str | None = field(
        default=None,
        metadata={"help": "Which concept head the batch's `concept_targets` train (default: the model's only head)."},
    )
