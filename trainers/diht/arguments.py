"""Arguments of `DiHTTrainer`: HN-NCE over the global batch and concept distillation (arXiv 2301.02280)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arguments import ContrastiveTrainingArguments

__all__ = ["DiHTTrainingArguments"]


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
    max_logit_scale: float = field(
        default=100.0,
        metadata={"help": "Clamp exp(logit_scale), the inverse temperature, to [1, this] after every optimizer step "
                          "(CLIP's 100, the bound DiHTModel declares); 0 disables the clamp."},
    )
