"""`DiHTTrainer`: transformers' Trainer with HN-NCE over the global batch and concept distillation.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280. The model computes embeddings (and concept logits); the trainer owns the
distributed context: it gathers embeddings across processes, computes the loss terms, clamps the logit scale and
logs every term. `ContrastiveTrainer` is the part a second recipe (COSMO) reuses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from hub_cards.card import is_generated_card

from .arguments import ContrastiveTrainingArguments, DiHTTrainingArguments
from .callbacks import LogitScaleClampCallback
from .losses import HNNCELoss, concept_distillation_loss

logger = logging.getLogger(__name__)

__all__ = ["ContrastiveTrainer", "DiHTTrainer"]

_SKIP_KEYS = ("skipped_images", "skipped_captions", "reused_pairs")


class _CollatorEpochCallback(TrainerCallback):
    """Tells the trainer's collator which epoch begins (the epoch is whole at its start, also after a resume)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        set_epoch = getattr(self.trainer.data_collator, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(int(state.epoch or 0))


class ContrastiveTrainer(Trainer):
    """A Trainer for image-text recipes whose loss has several named terms.

    - Subclasses implement `compute_loss_terms(model, inputs) -> (loss, {name: scalar})`; every named term is
      averaged over the micro-batches and processes of a logging interval and logged next to `loss`.
    - The loss is a mean over the pairs of a micro-batch, so the Trainer divides it by the number of
      gradient-accumulation steps (`loss_is_scaled_for_ga = False`).
    - The collator's counts of skipped rows (`skipped_images`, `skipped_captions`, `reused_pairs`) are summed over
      processes and logged per interval; `skipped_counts` gives the totals of this run so far, including those
      logged before a resume.
    - `LogitScaleClampCallback(args.max_logit_scale)` is added when the clamp is on.
    - Callbacks with an `attach(trainer)` method (`evaluation.ZeroShotEvaluationCallback`) are given this trainer,
      so they log through `self.log`.
    - A collator with `set_epoch` (e.g. `ImageTextCollator`) is told every epoch, so its augmentation, seeded per
      pair and epoch, repeats exactly in a resumed run.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, ContrastiveTrainingArguments):
            raise TypeError(f"{type(self).__name__} needs ContrastiveTrainingArguments (or a subclass), "
                            f"got {type(self.args).__name__}.")
        if self.args.max_logit_scale:
            self.add_callback(LogitScaleClampCallback(self.args.max_logit_scale, deepspeed=self.is_deepspeed_enabled))
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_steps = 0
        self._skip_sums = dict.fromkeys(_SKIP_KEYS, 0)
        self.add_callback(_CollatorEpochCallback(self))
        for callback in self.callback_handler.callbacks:  # e.g. ZeroShotEvaluationCallback: log through self.log
            if hasattr(callback, "attach"):
                callback.attach(self)

    def compute_loss_terms(self, model, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor], object]:
        """Return `(loss, named scalar terms to log, model outputs)` for one micro-batch."""
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        for key in _SKIP_KEYS:
            self._skip_sums[key] += int(inputs.pop(key, 0))
        loss, terms, outputs = self.compute_loss_terms(model, inputs)
        if model.training:
            for name, value in terms.items():
                value = value.detach().float()
                self._term_sums[name] = self._term_sums.get(name, 0) + value
            self._term_steps += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_steps:  # a training log: every process is here
            for name, total in self._term_sums.items():
                logs[name] = self.accelerator.reduce(total / self._term_steps, reduction="mean").item()
            counts = torch.tensor([self._skip_sums[key] for key in _SKIP_KEYS], device=self.args.device)
            for key, count in zip(_SKIP_KEYS, self.accelerator.reduce(counts, reduction="sum").tolist()):
                logs[key] = int(count)
            self._term_sums, self._term_steps = {}, 0
            self._skip_sums = dict.fromkeys(_SKIP_KEYS, 0)
        super().log(logs, start_time)

    @property
    def skipped_counts(self) -> dict[str, int]:
        """Rows skipped by the collator in this run so far (all processes), from the log history."""
        return {key: sum(int(entry.get(key, 0)) for entry in self.state.log_history) for key in _SKIP_KEYS}

    def create_model_card(self, *args, **kwargs) -> None:
        """`Trainer.create_model_card`, unless `<output_dir>/README.md` is a card written by `hub_cards`.

        `Trainer.push_to_hub` (and `save_model` with `push_to_hub`) call this; transformers' draft would replace the
        card that holds the evaluation table, the model-index and the DiHT details (arXiv 2301.02280), so that card
        is kept as it is.
        """
        readme = Path(self.args.output_dir) / "README.md"
        if is_generated_card(readme):
            logger.info("Keeping %s, a hub_cards model card, instead of writing the Trainer's draft card", readme)
            return
        super().create_model_card(*args, **kwargs)


class DiHTTrainer(ContrastiveTrainer):
    """Train a [`DiHTModel`] (or any CLIP-like model that returns embeddings) the DiHT way.

    The loss of a micro-batch is HN-NCE over the global batch (`trainers.HNNCELoss` with the arguments' alpha, beta,
    chunk size) plus `concept_loss_weight` times the concept-distillation loss when the batch carries
    `concept_targets` (see `ImageTextCollator`). Logged terms: `contrastive_loss`, `concept_loss` and `logit_scale`
    (the inverse temperature).

    Args:
        model: a `DiHTModel`; its forward must return `image_embeds`, `text_embeds`, `logit_scale` and, for concept
            distillation, `concept_logits`.
        args: [`DiHTTrainingArguments`].
        **kwargs: the rest of `transformers.Trainer`'s arguments (datasets, `data_collator`, callbacks, ...).

    Example:
        ```python
        trainer = DiHTTrainer(model=model, args=DiHTTrainingArguments("out", hn_nce_beta=0.5),
                              train_dataset=dataset, data_collator=ImageTextCollator(tokenizer, image_processor))
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
