"""COSMO's efficient connection mining (ECM): a frozen discriminator turns false negatives into positives.

COSMO (Byun, Kim and Moon, CVPR 2024, https://arxiv.org/abs/2312.06112, efficient connection mining; MAFA in v2). In
a batch, the hardest negative the student's ITC similarities propose for a text (its most similar other image) and
for an image (its most similar other text) is often a correct match: a *false negative*. A frozen image-text
matching model, the discriminator, scores only those 2B candidate pairs (not all B²), with match probability
p = softmax(itm_logits)[:, 1]:

- p > `high` (0.8): a false negative, **converted** to a positive: ITM label 1, an extra ITC positive in the
  direction it was mined (the target row is renormalised), an extra MLM row of the text on the re-paired image;
- `low` ≤ p ≤ `high`: **neutral**, replaced by the second-hardest candidate as the ITM negative (not re-scored);
- p < `low` (0.5): a true **negative**, the ITM negative.

`ConnectionMiner.mine` returns these decisions for one batch; `trainers.CosmoTrainer` applies them. The
discriminator is any model with an ITM head behind a small adapter (`CosmoDiscriminator` for COSMO/ALBEF
checkpoints of this library, `BlipDiscriminator` for transformers' `BlipForImageTextRetrieval`); it never enters the
optimizer, runs in inference mode, and may keep its unimodal states per dataset row (`cache_unimodal=True`), so that
after a row's first step only its fusion layers run (beyond the paper, which re-encodes every step's crops).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from modeling_cosmo.loss_cosmo import select_hard_negatives

__all__ = ["BlipDiscriminator", "ConnectionMiner", "CosmoDiscriminator", "ITMDiscriminator", "MinedBatch",
           "mining_quality"]


class ITMDiscriminator:
    """A frozen image-text matching model behind the interface the miner needs.

    Subclasses implement `encode_images(pixel_values)`, `encode_texts(input_ids, attention_mask)` (or return `None`
    when the model has no unimodal text part) and `match_logits(image_states, text_states, input_ids, attention_mask,
    pairs) -> (P, 2)`. This base class runs them in inference mode, in the discriminator's dtype, and caches the
    unimodal states per dataset row when asked.

    Args:
        model: the frozen model (moved to eval mode, gradients off).
        cache_unimodal: keep each row's image and text states the first time they are computed (keyed by the batch's
            `index`) and reuse them: the crops the discriminator sees are then those of the row's first step.
    """

    def __init__(self, model: torch.nn.Module, *, cache_unimodal: bool = False):
        self.model = model.eval().requires_grad_(False)
        self.cache_unimodal = cache_unimodal
        self._image_cache: dict[int, torch.Tensor] = {}
        self._text_cache: dict[int, torch.Tensor] = {}  # (length, D): the caption's own tokens
        self.unimodal_calls = 0  # forwards of the unimodal encoders (rows), for measurements

    def to(self, device=None, dtype=None) -> ITMDiscriminator:
        self.model.to(device=device, dtype=dtype)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def match_logits(self, image_states, text_states, input_ids, attention_mask, pairs) -> torch.Tensor:
        raise NotImplementedError

    def _cached(self, cache: dict, rows: list[int], compute, trim=None) -> list[torch.Tensor]:
        missing = [r for r, key in enumerate(rows) if key not in cache]
        if missing:
            fresh = compute(missing)
            for position, r in enumerate(missing):
                cache[rows[r]] = fresh[position] if trim is None else trim(fresh[position], r)
        return [cache[key] for key in rows]

    def _cached_texts(self, rows: list[int], input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text states from the cache, each kept at its caption's own length and padded (with zeros, masked by the
        batch's attention mask) to this batch's length: batches are padded to their longest caption, and a row's
        states at its real tokens do not depend on the padding (BERT's right padding, masked attention)."""
        lengths = attention_mask.sum(1).tolist()
        width = input_ids.shape[1]
        states = self._cached(self._text_cache, rows,
                              lambda missing: self._encode_texts(input_ids[missing], attention_mask[missing]),
                              trim=lambda state, r: state[: lengths[r]] if state.dim() >= 2 else state)
        return torch.stack([torch.nn.functional.pad(state, (0, 0, 0, width - state.shape[0])) if state.dim() >= 2
                            else state for state in states])

    @torch.inference_mode()
    def match_probability(self, inputs: dict[str, torch.Tensor], pairs: torch.Tensor) -> torch.Tensor:
        """`softmax(itm_logits)[:, 1]` of `pairs` `(P, 2)` = (image row, text row) of the batch `inputs`."""
        pixel_values = inputs["pixel_values"].to(self.dtype)
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        index = inputs.get("index")
        if self.cache_unimodal and index is not None:
            keys = index.tolist()
            images = torch.stack(self._cached(self._image_cache, keys,
                                              lambda rows: self._encode_images(pixel_values[rows])))
            texts = self._cached_texts(keys, input_ids, attention_mask)
        else:
            images, texts = self._encode_images(pixel_values), self._encode_texts(input_ids, attention_mask)
        logits = self.match_logits(images, texts, input_ids, attention_mask, pairs)
        return logits.float().softmax(dim=-1)[:, 1]

    def _encode_images(self, pixel_values):
        self.unimodal_calls += pixel_values.shape[0]
        return self.encode_images(pixel_values)

    def _encode_texts(self, input_ids, attention_mask):
        states = self.encode_texts(input_ids, attention_mask)
        return torch.zeros(input_ids.shape[0], 0) if states is None else states


class CosmoDiscriminator(ITMDiscriminator):
    """A COSMO/ALBEF checkpoint of this library (`modeling_cosmo.CosmoForImageTextRetrieval`) as the discriminator.

    It reads the student's own inputs (the same tokenizer and image processor, the same augmented crops, as the
    official code does); the cross-attention keys and values of each image are computed once for its pairs.
    """

    def encode_images(self, pixel_values):
        return self.model.encode_image(pixel_values)

    def encode_texts(self, input_ids, attention_mask):
        return self.model.encode_text(input_ids, attention_mask)

    def match_logits(self, image_states, text_states, input_ids, attention_mask, pairs):
        cache = self.model.precompute_cross_attention(image_states)
        return self.model.itm_logits(text_states, attention_mask, pairs=pairs, cross_attention_cache=cache)


class BlipDiscriminator(ITMDiscriminator):
    """transformers' `BlipForImageTextRetrieval` as the discriminator.

    BLIP's text encoder cross-attends in every layer, so only its image states can be cached. The student's
    `input_ids` are used as they are: the student's tokenizer must share BLIP's BERT vocabulary (checked on the
    vocabulary size). The student's images are resized to BLIP's resolution (bilinear, on the normalised pixels; both
    use OpenAI CLIP's mean and std).
    """

    def __init__(self, model, *, cache_unimodal: bool = False, student_vocab_size: int | None = None):
        super().__init__(model, cache_unimodal=cache_unimodal)
        vocab = model.config.text_config.vocab_size
        if student_vocab_size is not None and student_vocab_size != vocab:
            raise ValueError(f"the BLIP discriminator's vocabulary has {vocab} tokens, the student's tokenizer "
                             f"{student_vocab_size}: they must share BLIP's BERT vocabulary")

    def encode_images(self, pixel_values):
        size = self.model.config.vision_config.image_size
        if pixel_values.shape[-1] != size:
            pixel_values = torch.nn.functional.interpolate(pixel_values, size=(size, size), mode="bilinear",
                                                           align_corners=False)
        return self.model.vision_model(pixel_values=pixel_values).last_hidden_state

    def encode_texts(self, input_ids, attention_mask):
        return None  # BLIP has no unimodal text layers to cache

    def match_logits(self, image_states, text_states, input_ids, attention_mask, pairs):
        images = image_states[pairs[:, 0]]
        mask = torch.ones(images.shape[:-1], dtype=torch.long, device=images.device)
        out = self.model.text_encoder(input_ids=input_ids[pairs[:, 1]], attention_mask=attention_mask[pairs[:, 1]],
                                      encoder_hidden_states=images, encoder_attention_mask=mask)
        return self.model.itm_head(out.last_hidden_state[:, 0])


@dataclass
class MinedBatch:
    """The decisions of one batch, in the batch's row numbers.

    Attributes:
        negative_pairs: `(N, 2)` (image row, text row) ITM negatives: the true negatives and the second-hardest
            candidates that replace the neutral ones.
        converted_pairs: `(C, 2)` (image row, text row) false negatives converted to positives (ITM label 1, MLM rows).
        converted_text_to_image: `(C_t, 2)` (text row, image row): extra ITC positives of text anchors.
        converted_image_to_text: `(C_i, 2)` (image row, text row): extra ITC positives of image anchors.
        scored_pairs: `(S, 2)` (image row, text row) of every pair the discriminator scored, and
        scores: `(S,)` its match probabilities, and
        decisions: `(S,)` 1 converted, 0 neutral, -1 negative.
    """

    negative_pairs: torch.Tensor
    converted_pairs: torch.Tensor
    converted_text_to_image: torch.Tensor
    converted_image_to_text: torch.Tensor
    scored_pairs: torch.Tensor
    scores: torch.Tensor
    decisions: torch.Tensor

    def counts(self) -> dict[str, int]:
        """How many scored pairs went to each class."""
        return {"converted": int((self.decisions == 1).sum()), "neutral": int((self.decisions == 0).sum()),
                "negative": int((self.decisions == -1).sum())}


@dataclass
class ConnectionMiner:
    """Score the hardest in-batch negatives with a frozen discriminator and split them three ways (COSMO's ECM).

    Args:
        discriminator: an `ITMDiscriminator`.
        low, high: the thresholds on the match probability (COSMO: 0.5 and 0.8); p < low is a negative, p > high a
            false negative, anything in between neutral.
        history: keep the last `history` decisions in `self.history` as dataset-index pairs (`index` column), for
            measuring precision against known false negatives; 0 keeps none.
    """

    discriminator: ITMDiscriminator
    low: float = 0.5
    high: float = 0.8
    history: int = 0
    records: deque = field(init=False)

    def __post_init__(self):
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"need 0 <= low <= high <= 1, got low={self.low}, high={self.high}")
        self.records = deque(maxlen=self.history)

    @torch.no_grad()
    def mine(self, inputs: dict[str, torch.Tensor], logits_per_image: torch.Tensor, logits_per_text: torch.Tensor,
             image_id: torch.Tensor | None = None) -> MinedBatch:
        """The decisions for one batch of B pairs.

        Args:
            inputs: the batch (`pixel_values`, `input_ids`, `attention_mask`, optionally `index`).
            logits_per_image: `(B, B)` the student's image-anchored ITC similarities.
            logits_per_text: `(B, B)` the text-anchored ones.
            image_id: `(B,)` image ids: candidates sharing the anchor's image are never negatives.
        """
        device = logits_per_text.device
        rows = torch.arange(logits_per_text.shape[0], device=device)
        # The hardest and second-hardest candidate of every text (images) and of every image (texts).
        images_of_text = select_hard_negatives(logits_per_text, image_id, num_negatives=2)  # (B, 2), -1: none
        texts_of_image = select_hard_negatives(logits_per_image, image_id, num_negatives=2)  # (B, 2)
        t2i = images_of_text[:, 0] >= 0
        i2t = texts_of_image[:, 0] >= 0
        scored_t2i = torch.stack([images_of_text[t2i, 0], rows[t2i]], 1)  # (image j1(t), text t)
        scored_i2t = torch.stack([rows[i2t], texts_of_image[i2t, 0]], 1)  # (image i, text k1(i))
        scored = torch.cat([scored_t2i, scored_i2t])  # (S, 2)
        scores = (self.discriminator.match_probability(inputs, scored) if scored.numel()
                  else torch.zeros(0, device=device)).to(device)
        decisions = torch.where(scores > self.high, 1, torch.where(scores < self.low, -1, 0))
        # Neutral candidates are replaced by the second-hardest one of the same anchor (not re-scored).
        second = torch.cat([torch.stack([images_of_text[t2i, 1], rows[t2i]], 1),
                            torch.stack([rows[i2t], texts_of_image[i2t, 1]], 1)])
        neutral = (decisions == 0) & (second >= 0).all(1)
        negatives = torch.cat([scored[decisions == -1], second[neutral]])
        first = len(scored_t2i)
        converted = decisions == 1
        mined = MinedBatch(
            negative_pairs=negatives, converted_pairs=scored[converted],
            converted_text_to_image=scored_t2i[converted[:first]].flip(1),
            converted_image_to_text=scored_i2t[converted[first:]],
            scored_pairs=scored, scores=scores, decisions=decisions,
        )
        if self.history and "index" in inputs:
            index = inputs["index"].to(device)
            for (image, text), score, decision in zip(scored.tolist(), scores.tolist(), decisions.tolist()):
                self.records.append((int(index[image]), int(index[text]), float(score), int(decision)))
        return mined

    def state(self) -> dict[str, Any]:
        """The thresholds, for logs and model cards."""
        return {"ecm_low": self.low, "ecm_high": self.high,
                "ecm_discriminator": type(self.discriminator.model).__name__,
                "ecm_cache_unimodal": self.discriminator.cache_unimodal}


def mining_quality(records, matches) -> dict[str, float | int]:
    """Precision and recall of the miner's conversions against known matches (a planted ground truth).

    Args:
        records: `ConnectionMiner.records`: `(image index, text index, probability, decision)` per scored pair.
        matches: `matches(image index, text index) -> bool`, whether the pair truly matches (a false negative).

    Returns:
        `precision` (share of converted pairs that truly match), `recall` (share of the scored true matches that were
        converted), the counts behind them, and `chance_precision` (the share of true matches among all scored pairs:
        a random conversion's precision).

    Example:
        >>> records = [(0, 1, 0.9, 1), (0, 2, 0.2, -1), (1, 0, 0.95, 1), (2, 0, 0.6, 0)]
        >>> mining_quality(records, lambda image, text: {image, text} == {0, 1})["precision"]
        1.0
    """
    truth = [bool(matches(image, text)) for image, text, _, _ in records]
    converted = [decision == 1 for _, _, _, decision in records]
    hits = sum(t and c for t, c in zip(truth, converted))
    return {
        "scored": len(records), "converted": sum(converted), "true_false_negatives": sum(truth),
        "converted_true": hits,
        "precision": hits / sum(converted) if any(converted) else float("nan"),
        "recall": hits / sum(truth) if any(truth) else float("nan"),
        "chance_precision": sum(truth) / len(records) if records else float("nan"),
    }
