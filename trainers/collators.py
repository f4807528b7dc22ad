"""Batches of image-text pairs for the contrastive trainers, decoded robustly.

Images are decoded here, in the data-loader workers, not by `datasets` (cast the image column to
`datasets.Image(decode=False)`): a corrupt file then costs one skipped, counted row instead of a dead worker.
Decoding is `curation.load_image`'s (any image cell to RGB, 16-bit rescaled, decompression bombs refused).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from curation.images import UndecodableImageError, load_image

logger = logging.getLogger(__name__)

__all__ = ["ImageTextCollator", "concept_targets", "diht_train_transform"]


def concept_targets(
    concept_ids: Sequence[Sequence[int]],
    num_concepts: int,
    concept_scores: Sequence[Sequence[float]] | None = None,
) -> torch.Tensor:
    """`(B, K)` multi-label targets from each image's teacher concepts (DiHT concept distillation, §1.4).

    Args:
        concept_ids: per image, the teacher's top-k concept ids (as `curation.label_concepts` writes them).
        num_concepts: K, the size of the concept vocabulary (the head's output size).
        concept_scores: per image, the teacher's probabilities of those ids: soft targets. `None`: hard targets,
            1 at every listed id.

    Example:
        >>> concept_targets([[2, 0], [1]], 3)
        tensor([[1., 0., 1.],
                [0., 1., 0.]])
    """
    targets = torch.zeros(len(concept_ids), num_concepts)
    for row, ids in enumerate(concept_ids):
        ids = list(ids or [])
        if any(not 0 <= i < num_concepts for i in ids):
            raise ValueError(f"concept ids {ids} outside the vocabulary of {num_concepts} concepts.")
        values = 1.0 if concept_scores is None else torch.tensor(list(concept_scores[row]), dtype=torch.float32)
        targets[row, torch.tensor(ids, dtype=torch.long)] = values
    return targets


class ImageTextCollator:
    """Turn rows `{image, caption, [concept_ids, concept_scores]}` into a DiHT/CLIP batch.

    Rows whose image cannot be decoded or whose caption is empty or not a string are dropped from the batch and
    counted: the batch carries `skipped_images` and `skipped_captions`, which the trainer logs (so the counts
    survive data-loader worker processes). A batch is never left with fewer than `min_pairs` pairs (a contrastive
    batch needs a negative): in that rare case it is topped up with pairs of the last good batch, counted as
    `reused_pairs`.

    Args:
        tokenizer: a transformers tokenizer; captions are padded to the longest and truncated to its max length.
        image_processor: a transformers image processor (e.g. `CLIPImageProcessor`).
        image_column, caption_column: names of the columns.
        train_transform: optional random callable PIL -> PIL applied before the processor (e.g. DiHT's
            `RandomResizedCrop(scale=(0.9, 1.0))`, see `diht_train_transform`) that draws from Python's `random`
            (as timm's transforms do). Its randomness is drawn from a
            seed derived from `seed`, the epoch (`set_epoch`) and the pair's own bytes, so a pair gets the same crop
            whatever the process count, worker count or batch it lands in, and a resumed run draws what the
            uninterrupted run drew (the global RNG cannot promise that: data loaders prefetch).
        num_concepts: size of the concept vocabulary; when set, rows must carry `concept_column` and the batch gets
            `concept_targets` of shape `(B, num_concepts)`.
        concept_column, concept_scores_column: columns written by the concept labelling.
        soft_concepts: use the teacher's scores as soft targets instead of 1 at its top-k concepts.
        min_pairs: the smallest batch the loss accepts.
        seed: base seed of the augmentation.
    """

    def __init__(
        self,
        tokenizer,
        image_processor,
        *,
        image_column: str = "image",
        caption_column: str = "caption",
        train_transform: Callable[[Image.Image], Image.Image] | None = None,
        num_concepts: int | None = None,
        concept_column: str = "concept_ids",
        concept_scores_column: str = "concept_scores",
        soft_concepts: bool = False,
        min_pairs: int = 2,
        seed: int = 0,
    ):
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.image_column, self.caption_column = image_column, caption_column
        self.train_transform = train_transform
        self.num_concepts, self.soft_concepts = num_concepts, soft_concepts
        self.concept_column, self.concept_scores_column = concept_column, concept_scores_column
        self.min_pairs, self.seed, self.epoch = min_pairs, seed, 0
        self._last_good: list[tuple] = []

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations for a new pass over the data (`ContrastiveTrainer` calls it every epoch)."""
        self.epoch = epoch

    def _augment(self, image: Image.Image, caption: str) -> Image.Image:
        digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=caption.encode()[:64])
        digest.update(f"{self.seed}/{self.epoch}".encode())
        # timm's transforms draw from Python's `random`: seed a private state for this pair, then put it back.
        # (Reseeding torch's global RNG instead costs ~2 ms per call.)
        outer = random.getstate()
        random.seed(int.from_bytes(digest.digest(), "little"))
        try:
            return self.train_transform(image)
        finally:
            random.setstate(outer)

    def _decode_row(self, row: dict) -> tuple | str:
        """(image, caption, row) or the reason the row is skipped."""
        for column in (self.image_column, self.caption_column):
            if column not in row:
                raise KeyError(f"column {column!r} is missing from the batch rows (have {sorted(row)}).")
        caption = row[self.caption_column]
        if not isinstance(caption, str) or not caption.strip():
            return "caption"
        try:
            image = load_image(row[self.image_column])
        except UndecodableImageError as error:
            logger.warning("skipping a pair: %s", error)
            return "image"
        if self.train_transform is not None:
            image = self._augment(image, caption)
        return image, caption, row

    def __call__(self, rows: list[dict]) -> dict[str, Any]:
        decoded = [self._decode_row(row) for row in rows]
        good = [item for item in decoded if isinstance(item, tuple)]
        reused = 0
        if len(good) < self.min_pairs:
            reused = min(self.min_pairs - len(good), len(self._last_good))
            good = good + self._last_good[:reused]
            if len(good) < self.min_pairs:
                raise ValueError(f"only {len(good)} decodable pairs in a batch of {len(rows)} and no earlier batch "
                                 f"to top it up; the loss needs {self.min_pairs}.")
        else:
            self._last_good = good[: self.min_pairs]

        images, captions, kept_rows = zip(*good)
        batch = dict(self.tokenizer(list(captions), padding=True, truncation=True, return_tensors="pt"))
        batch["pixel_values"] = self.image_processor(list(images), return_tensors="pt")["pixel_values"]
        if self.num_concepts:
            if self.concept_column not in kept_rows[0]:
                raise KeyError(f"concept distillation needs column {self.concept_column!r} "
                               "(from curation.label_concepts).")
            scores = [row[self.concept_scores_column] for row in kept_rows] if self.soft_concepts else None
            batch["concept_targets"] = concept_targets([row[self.concept_column] for row in kept_rows],
                                                       self.num_concepts, scores)
        batch["skipped_images"] = sum(item == "image" for item in decoded)
        batch["skipped_captions"] = sum(item == "caption" for item in decoded)
        batch["reused_pairs"] = reused
        return batch


def diht_train_transform(image_size: int) -> Callable[[Image.Image], Image.Image]:
    """DiHT's training augmentation (official configs): `RandomResizedCrop(image_size, scale=(0.9, 1.0))`, bicubic.

    timm's implementation, which draws from Python's `random` (so `ImageTextCollator` can seed it per pair).
    """
    from timm.data.transforms import RandomResizedCropAndInterpolation

    return RandomResizedCropAndInterpolation(image_size, scale=(0.9, 1.0), interpolation="bicubic")
