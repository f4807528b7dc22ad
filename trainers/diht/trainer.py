"""`DiHTTrainer`: transformers' Trainer with HN-NCE over the global batch and concept distillation.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280. The model computes embeddings (and concept logits); the trainer owns the
distributed context: it gathers embeddings across processes, computes the loss terms and logs every term. The
rest (logging, counters, clamps, evaluation, sampler hooks) is the shared `ContrastiveTrainer`.
"""

from __future__ import annotations

import math

from ..trainer import ContrastiveTrainer
from .arguments import DiHTTrainingArguments
from .losses import HNNCELoss, concept_distillation_loss

__all__ = ["DiHTTrainer"]


class DiHTTrainer(ContrastiveTrainer):
    """Train a [`DiHTModel`] (or any CLIP-like model that returns embeddings) the DiHT way.

    The loss of a micro-batch is HN-NCE over the global batch (`trainers.HNNCELoss` with the arguments' alpha, beta,
    chunk size) plus `concept_loss_weight` times the concept-distillation loss when the batch carries
    `concept_targets` (see `trainers.ConceptTargets`). Logged terms: `contrastive_loss`, `concept_loss` and
    `logit_scale` (the inverse temperature), which is clamped at `max_logit_scale` after every step.

    Args:
        model: a `DiHTModel`; its forward must return `image_embeds`, `text_embeds`, `logit_scale` and, for concept
            distillation, `concept_logits`.
        args: [`DiHTTrainingArguments`].
        **kwargs: the rest of `ContrastiveTrainer`'s and `transformers.Trainer`'s arguments (datasets,
            `data_collator`, callbacks, `eval_tasks`, ...).

    Example:
        ```python
        trainer = DiHTTrainer(model=model, args=DiHTTrainingArguments("out", hn_nce_beta=0.5),
                              train_dataset=dataset, data_collator=diht_collator(tokenizer, image_processor))
        trainer.train()
        ```
    """

    def __init__(self, model=None, args: DiHTTrainingArguments | None = None, **kwargs):
        if args is None:
            args = DiHTTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, DiHTTrainingArguments):
            raise TypeError(f"DiHTTrainer needs DiHTTrainingArguments, got {type(args).__name__}.")
        super().__init__(model=model, args=args, **kwargs)
        self.contrastive_loss = HNNCELoss(args.hn_nce_alpha, args.hn_nce_beta, chunk_size=args.hn_nce_chunk_size,
                                          detach_weights=args.hn_nce_detach_weights)

    def clamp_overrides(self) -> dict[str, tuple[float | None, float | None]]:
        """`logit_scale` in [0, ln(max_logit_scale)] (CLIP's 100 by default); `max_logit_scale=0` lifts it."""
        limit = self.args.max_logit_scale
        if limit and limit <= 1:
            raise ValueError(f"max_logit_scale must exceed 1 (or be 0 for no clamp), got {limit}")
        return {"logit_scale": (0.0, math.log(limit)) if limit else (None, None)}

    def loss_config(self) -> dict:
        """The loss settings a model card reports (HN-NCE's α, β, tiling; the concept-loss weight)."""
        return {**self.contrastive_loss.get_config_dict(), "concept_loss_weight": self.args.concept_loss_weight}

    def _concept_head(self, outputs) -> str:
        heads = outputs.concept_logits or {}
        name = self.args.concept_head
        if name is None:
            if len(heads) != 1:
                raise ValueError(f"the batch has concept targets but the model has {len(heads)} concept heads "
                                 f"({sorted(heads)}); set `concept_head` in the training arguments.")
            return next(iter(heads))
        if name not in heads:
            raise ValueError(f"concept head {name!r} not in the model's heads {sorted(heads)}.")
        return name

    def compute_loss_terms(self, model, inputs):
        concept_targets = inputs.pop("concept_targets", None)
        inputs.pop("image_id", None)  # HN-NCE has one positive per anchor; shared images are not handled
        outputs = model(**inputs, return_loss=False)
        contrastive = self.contrastive_loss(outputs.image_embeds, outputs.text_embeds, outputs.logit_scale)
        loss = contrastive
        terms = {"contrastive_loss": contrastive}
        trained_head = None
        if concept_targets is not None and self.args.concept_loss_weight:
            trained_head = self._concept_head(outputs)
            concept = concept_distillation_loss(outputs.concept_logits[trained_head], concept_targets)
            loss = loss + self.args.concept_loss_weight * concept
            terms["concept_loss"] = concept
        for name, logits in (outputs.concept_logits or {}).items():
            if name != trained_head:  # keep idle heads in the graph: DDP expects a gradient for every parameter
                loss = loss + 0.0 * logits.sum()
        terms["logit_scale"] = outputs.logit_scale
        return loss, terms, outputs
