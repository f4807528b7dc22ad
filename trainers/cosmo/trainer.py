"""`CosmoTrainer`: COSMO pre-training (and retrieval fine-tuning) with transformers' Trainer.

COSMO (Byun, Kim and Moon, CVPR 2024, https://arxiv.org/abs/2312.06112; MAFA in v2) trains an ALBEF-style model
(arXiv 2107.07651) with `loss = ITC + ITM + MLM` on GRIT's grouped mini-batches (arXiv 2208.04060), converts the
false negatives a frozen discriminator finds among the hardest in-batch negatives into positives (ECM), and smooths
the ITC targets (S-ITC). The model (`modeling_cosmo.CosmoForPreTraining`) computes ITM and MLM of its batch; this
trainer owns what needs the whole run or every process: the ITC over the global batch, the miner it hands to the
model's forward, the grouped sampler fed by the embeddings of every step, the epoch switches, the logs.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from transformers import TrainerCallback

from modeling_cosmo.modeling_cosmo_pretraining import hard_negative_pairs

from ..contrastive_loss import GlobalBatchContrastiveLoss, multi_positive_targets
from ..diht.losses import HNNCELoss
from ..distributed import all_gather_values
from ..loading import whole_under_zero3
from ..trainer import ContrastiveTrainer
from .arguments import CosmoTrainingArguments
from .collators import MaskedCaptions, _row_seed, mask_rows
from .grouping import GroupedMiniBatchSampler
from .mining import ConnectionMiner, MinedBatch

logger = logging.getLogger(__name__)

__all__ = ["CosmoTrainer", "itm_prior_loss"]


class _AddOnEpochCallback(TrainerCallback):
    """Tells the collator's add-ons (the MLM masking) which epoch begins, before its batches are built."""

    def __init__(self, trainer: ContrastiveTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        for add_on in getattr(self.trainer.data_collator, "add_ons", []):
            if hasattr(add_on, "set_epoch"):
                add_on.set_epoch(math.floor((state.epoch or 0) + 1e-9))


def itm_prior_loss(labels: torch.Tensor) -> torch.Tensor:
    """The ITM loss of a model that always predicts the labels' class prior: their binary entropy.

    With one positive and two negatives per pair (GRIT-VLP, COSMO) it is -(1/3 ln 1/3 + 2/3 ln 2/3) = 0.6365: an ITM
    loss stuck there has learnt nothing but the label mix (the users' recurring report about ALBEF and BLIP training).

    Example:
        >>> round(float(itm_prior_loss(torch.tensor([1, 0, 0]))), 4)
        0.6365
    """
    p = labels.float().mean().clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


class CosmoTrainer(ContrastiveTrainer):
    """Train a [`CosmoForPreTraining`] the COSMO way (arXiv 2312.06112).

    Per micro-batch: the model's forward computes the ITC similarities; with connection mining on, the miner scores
    the hardest negative of every text and every image with the frozen discriminator and returns the ITM negatives,
    the converted pairs and their MLM rows to the same forward (`itm_pair_selector`), which then computes ITM and MLM.
    The trainer adds the ITC over the global batch (or per process), with same-image positives (`image_id`), the
    converted pairs as extra positives in the direction they were mined, and S-ITC smoothing from
    `itc_smoothing_start_epoch` on. With `grouped_batches`, the batches come from a `GroupedMiniBatchSampler` (epoch 0
    random, then GRIT's groups built from the embeddings the steps computed), and its state is saved in every
    checkpoint.

    Logged terms: `itc_loss`, `itm_loss`, `mlm_loss`, `itm_prior_loss` (the loss of predicting the label mix; 0.6365 at
    one positive per two negatives), `temperature`, `itc_smoothing`, and with ECM the per-step counts `ecm_converted`,
    `ecm_neutral`, `ecm_negative` (their totals over the run, this process's, in `ecm_counts`).

    Args:
        model: a `CosmoForPreTraining`.
        args: [`CosmoTrainingArguments`].
        discriminator: the frozen ITM model for ECM, wrapped (`trainers.CosmoDiscriminator` or
            `trainers.BlipDiscriminator`), or `None` to load `args.discriminator` (a COSMO folder).
        **kwargs: the rest of `ContrastiveTrainer`'s and `transformers.Trainer`'s arguments; the dataset needs an
            `index` column for the grouped sampler and the discriminator cache, and may carry `image_id`.
    """

    def __init__(self, model=None, args: CosmoTrainingArguments | None = None, *, discriminator=None, **kwargs):
        if args is None:
            args = CosmoTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, CosmoTrainingArguments):
            raise TypeError(f"CosmoTrainer needs CosmoTrainingArguments, got {type(args).__name__}.")
        pretraining = args.task == "pretrain"
        if pretraining and args.grouped_batches and kwargs.get("batch_sampler") is None:
            kwargs["batch_sampler"] = GroupedMiniBatchSampler.factory(
                buffer_size=args.grit_buffer_size, search_space=args.grit_search_space, grouping=args.grit_grouping)
        super().__init__(model=model, args=args, **kwargs)
        self.miner = None
        if pretraining and args.connection_mining:
            discriminator = discriminator or self._load_discriminator(args.discriminator)
            dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
            discriminator.to(device=args.device, dtype=dtype)
            self.miner = ConnectionMiner(discriminator, low=args.ecm_low, high=args.ecm_high,
                                         history=args.ecm_history)
        config = self.model.config
        self.itc_loss = (HNNCELoss(config.hn_nce_alpha, config.hn_nce_beta) if config.itc_loss == "hn_nce" else
                         GlobalBatchContrastiveLoss(gather=args.itc_scope == "global",
                                                    detach_candidates=config.itc_detach_other_side))
        if config.itc_loss == "hn_nce":
            self.itc_loss.gather = args.itc_scope == "global"
        self._masker = next((add_on for add_on in getattr(self.data_collator, "add_ons", [])
                             if isinstance(add_on, MaskedCaptions)), None)
        self._batch_index: torch.Tensor | None = None
        self.ecm_counts = dict.fromkeys(("converted", "neutral", "negative"), 0)  # this process's totals
        self.add_callback(_AddOnEpochCallback(self))

    @staticmethod
    def _load_discriminator(path: str | None):
        from .mining import CosmoDiscriminator

        if not path:
            raise ValueError("connection mining needs a trained discriminator: pass --discriminator <a COSMO folder "
                             "with an ITM head> (or connection_mining=False). Mining with an untrained ITM head "
                             "converts random pairs.")
        from modeling_cosmo import CosmoForImageTextRetrieval

        with whole_under_zero3():  # frozen and never wrapped by DeepSpeed: its parameters must not be partitioned
            model, info = CosmoForImageTextRetrieval.from_pretrained(path, output_loading_info=True)
        untrained = [key for key in info["missing_keys"] if key.startswith("itm_head")]
        if untrained:
            raise ValueError(f"the discriminator {path} has no trained ITM head (missing {untrained})")
        return CosmoDiscriminator(model)

    def loss_config(self) -> dict[str, Any]:
        """The settings a model card reports."""
        args = self.args
        settings = {"loss": "ITC + ITM + MLM" if args.task == "pretrain" else "ITC + ITM",
                    "itc_loss": self.model.config.itc_loss, "itc_smoothing": args.itc_smoothing,
                    "hard_negative_mode": self.model.config.hard_negative_mode,
                    "itc_scope": ("the global batch (all processes)" if args.itc_scope == "global"
                                  else "each process's batch"),
                    "grouped_batches": args.task == "pretrain" and args.grouped_batches,
                    "connection_mining": self.miner is not None}
        if settings["grouped_batches"]:
            settings["grit_grouping"] = args.grit_grouping
        if self.miner is not None:
            settings["ecm_thresholds"] = f"p < {args.ecm_low}: negative; p > {args.ecm_high}: positive"
        if self._masker is not None:
            settings["mlm_probability"] = self._masker.masker.mlm_probability
        return settings

    # ---- epochs ----------------------------------------------------------------------------------------------------

    def _epoch(self) -> int:
        return math.floor((self.state.epoch or 0) + 1e-9)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._batch_index = inputs.get("index")  # the base class pops it for the sampler's tap
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    # ---- the step ----------------------------------------------------------------------------------------------------

    def compute_loss_terms(self, model, inputs):
        image_id = inputs.pop("image_id", None)
        epoch = self._epoch()
        smoothing = self.args.itc_smoothing if epoch >= self.args.itc_smoothing_start_epoch else 0.0
        mined: dict[str, MinedBatch] = {}
        selector = None
        if epoch < self.args.itm_hard_negatives_start_epoch:
            def selector(outputs: dict) -> dict:  # uniform negatives while the encoders learn the basics
                return {"itm_negative_pairs": hard_negative_pairs(outputs["logits_per_image"],
                                                                  outputs["logits_per_text"],
                                                                  image_id, mode="random")}
        elif self.miner is not None and model.training and not self.stand_in_batch:  # stand-ins: nothing to mine
            batch = {**inputs, **({"index": self._batch_index} if self._batch_index is not None else {})}

            def selector(outputs: dict) -> dict:
                mined["batch"] = self.miner.mine(batch, outputs["logits_per_image"], outputs["logits_per_text"],
                                                 image_id)
                return self._model_inputs(mined["batch"], batch, epoch)

        outputs = model(**inputs, image_id=image_id, itc_smoothing=smoothing, itm_pair_selector=selector,
                        return_loss=True)
        itc = self._itc(outputs, image_id, mined.get("batch"), smoothing)
        mlm = outputs.mlm_loss
        loss = itc + outputs.itm_loss + (mlm if mlm is not None else 0.0)
        terms = {"itc_loss": itc, "itm_loss": outputs.itm_loss, "itm_prior_loss": itm_prior_loss(outputs.itm_labels),
                 "temperature": 1.0 / outputs.logit_scale.detach(), "itc_smoothing": torch.tensor(smoothing)}
        if mlm is not None:
            terms["mlm_loss"] = mlm
        if "batch" in mined:
            counts = mined["batch"].counts()
            for name, value in counts.items():
                self.ecm_counts[name] += value
            terms.update({f"ecm_{name}": torch.tensor(float(value)) for name, value in counts.items()})
        return loss, terms, outputs

    def _model_inputs(self, mined: MinedBatch, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        """The forward's ITM and MLM inputs after mining: negatives, converted pairs, their MLM rows."""
        chosen = {"itm_negative_pairs": mined.negative_pairs, "extra_itm_pairs": mined.converted_pairs}
        if "mlm_input_ids" in batch and mined.converted_pairs.numel():
            images, texts = mined.converted_pairs[:, 0], mined.converted_pairs[:, 1]
            ids, mask = batch["input_ids"][texts], batch["attention_mask"][texts]
            keys = (batch["index"][texts].tolist() if "index" in batch else texts.tolist())
            image_keys = (batch["index"][images].tolist() if "index" in batch else images.tolist())
            seeds = [_row_seed(self.args.seed, epoch, "converted", a, b) for a, b in zip(keys, image_keys)]
            if self._masker is None:
                raise ValueError("the batch has MLM inputs but the collator has no trainers.MaskedCaptions add-on to "
                                 "mask the rows of the converted pairs")
            masked, labels = mask_rows(self._masker.masker, ids, mask, seeds)  # each re-paired text masked anew
            rows = torch.arange(batch["input_ids"].shape[0], device=images.device)
            chosen.update(
                mlm_input_ids=torch.cat([batch["mlm_input_ids"], masked]),
                mlm_labels=torch.cat([batch["mlm_labels"], labels]),
                mlm_attention_mask=torch.cat([batch["attention_mask"], mask]),
                mlm_image_index=torch.cat([rows, images]),
            )
        return chosen

    def _itc(self, outputs, image_id: torch.Tensor | None, mined: MinedBatch | None, smoothing: float):
        """ITC of this process's pairs against the candidates (global or per process), with the multi-positive,
        smoothed targets: own pair, same image, converted pairs in their direction; `(1 - ε) y + ε / N`."""
        image_embeds, text_embeds, scale = outputs.image_embeds, outputs.text_embeds, outputs.logit_scale
        if isinstance(self.itc_loss, HNNCELoss):
            return self.itc_loss(image_embeds, text_embeds, scale)  # one positive per anchor; no smoothing
        local = image_embeds.shape[0]
        device = image_embeds.device
        gathered_ids = None
        if image_id is not None:
            ids = image_id.to(device)
            gathered_ids = all_gather_values(ids) if self.itc_loss.gather else ids
        extra_i2t = mined.converted_image_to_text if mined is not None else None  # (image row, text row)
        extra_t2i = mined.converted_text_to_image if mined is not None else None  # (text row, image row)

        def targets(extra):
            def build(offset: int, num_candidates: int) -> torch.Tensor:
                positives = torch.zeros(local, num_candidates, dtype=torch.bool, device=device)
                rows = torch.arange(local, device=device)
                positives[rows, offset + rows] = True
                if gathered_ids is not None:
                    positives |= image_id.to(device).view(-1, 1) == gathered_ids.view(1, -1)
                if extra is not None and extra.numel():
                    positives[extra[:, 0], offset + extra[:, 1]] = True
                return multi_positive_targets(positives, num_candidates, smoothing=smoothing)
            return build

        return self.itc_loss(image_embeds, text_embeds, scale, image_targets=targets(extra_i2t),
                             text_targets=targets(extra_t2i))

