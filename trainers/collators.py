"""Batches of image-text pairs for the contrastive trainers, decoded robustly.

Images are decoded here, in the data-loader workers, not by `datasets` (cast the image column to
`datasets.Image(decode=False)`): a corrupt file then costs one skipped, counted row instead of a dead worker.
Decoding is `image_text_data.load_image`'s (any image cell to RGB, 16-bit rescaled, decompression bombs refused).

A collator declares the counters it writes into every batch (`counters`); the trainer pops them, sums them over
processes and logs them, so a count survives data-loader worker processes. Recipe-specific inputs (DiHT's concept
targets, COSMO's masked tokens) are add-ons: callables `(batch, rows) -> dict` that see the batch built so far and
the kept rows, and return the keys they add.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from PIL import Image

from image_text_data.images import UndecodableImageError, load_image

logger = logging.getLogger(__name__)

__all__ = ["BatchAddOn", "ImageLabelCollator", "ImageTextCollator"]


class BatchAddOn(Protocol):
    """Adds recipe-specific inputs to a batch: `add_on(batch, kept_rows) -> {key: value}`."""

    def __call__(self, batch: dict[str, Any], rows: Sequence[dict]) -> dict[str, Any]: ...


class ImageTextCollator:
    """Turn rows `{image, caption, ...}` into a batch of a contrastive image-text model.

    Rows whose image cannot be decoded or whose caption is empty or not a string are dropped from the batch and
    counted (`skipped_images`, `skipped_captions`). A batch is never left with fewer than `min_pairs` pairs (a
    contrastive batch needs a negative): with `top_up` it is then topped up with pairs of the last good batch,
    counted as `reused_pairs`; without (a grouped sampler chose exactly these rows), it is an error.

    Args:
        tokenizer: a transformers tokenizer; captions are padded to the longest and truncated to its max length.
        image_processor: a transformers image processor (e.g. `CLIPImageProcessor`).
        image_column, caption_column: names of the columns.
        train_transform: optional random callable PIL -> PIL applied before the processor (e.g. DiHT's
            `RandomResizedCrop(scale=(0.9, 1.0))`, `trainers.diht_train_transform`) that draws from Python's `random`
            (as timm's transforms do). Its randomness is drawn from a seed derived from `seed`, the epoch
            (`set_epoch`) and the pair's own bytes, so a pair gets the same crop whatever the process count, worker
            count or batch it lands in, and a resumed run draws what the uninterrupted run drew.
        add_ons: recipe inputs added to every batch (see `BatchAddOn`), e.g. `trainers.ConceptTargets`.
        pass_through: integer columns copied into the batch as `(B,)` tensors when the rows have them (`index`, the
            dataset row a grouped sampler needs; `image_id`, so that pairs of one image are never negatives).
        min_pairs: the smallest batch the loss accepts.
        top_up: complete a short batch from the previous one (off for samplers that choose every batch).
        seed: base seed of the augmentation.
    """

    counters = ("skipped_images", "skipped_captions", "reused_pairs")

    def __init__(
        self,
        tokenizer,
        image_processor,
        *,
        image_column: str = "image",
        caption_column: str = "caption",
        train_transform: Callable[[Image.Image], Image.Image] | None = None,
        add_ons: Sequence[BatchAddOn] = (),
        pass_through: Sequence[str] = ("index", "image_id"),
        min_pairs: int = 2,
        top_up: bool = True,
        seed: int = 0,
    ):
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.image_column, self.caption_column = image_column, caption_column
        self.train_transform, self.add_ons, self.pass_through = train_transform, list(add_ons), tuple(pass_through)
        self.min_pairs, self.top_up, self.seed, self.epoch = min_pairs, top_up, seed, 0
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
            if self.top_up:
                reused = min(self.min_pairs - len(good), len(self._last_good))
                good = good + self._last_good[:reused]
            if len(good) < self.min_pairs:
                raise ValueError(f"only {len(good)} decodable pairs in a batch of {len(rows)}"
                                 + (" and no earlier batch to top it up" if self.top_up else "")
                                 + f"; the loss needs {self.min_pairs}.")
        else:
            self._last_good = good[: self.min_pairs]

        images, captions, kept_rows = zip(*good)
        batch = dict(self.tokenizer(list(captions), padding=True, truncation=True, return_tensors="pt"))
        batch["pixel_values"] = self.image_processor(list(images), return_tensors="pt")["pixel_values"]
        for column in self.pass_through:
            if column in kept_rows[0]:
                batch[column] = torch.tensor([row[column] for row in kept_rows], dtype=torch.long)
        for add_on in self.add_ons:
            batch.update(add_on(batch, kept_rows))
        batch["skipped_images"] = sum(item == "image" for item in decoded)
        batch["skipped_captions"] = sum(item == "caption" for item in decoded)
        batch["reused_pairs"] = reused
        return batch


class ImageLabelCollator:
    """Rows `{image, label}` to `{"pixel_values": (B, 3, H, W), "labels": (B,)}` for an image classifier.

    Images are decoded with `image_text_data.load_image`; an undecodable one is an error naming its row position,
    because the rows of a few-shot training set are chosen (and checked) beforehand.
    """

    def __init__(self, image_processor, *, image_column: str = "image", label_column: str = "label"):
        self.image_processor, self.image_column, self.label_column = image_processor, image_column, label_column

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        images = []
        for position, row in enumerate(rows):
            try:
                images.append(load_image(row[self.image_column]))
            except UndecodableImageError as error:
                raise ValueError(f"training image {position} of the batch cannot be decoded: {error}") from error
        return {"pixel_values": self.image_processor(images, return_tensors="pt")["pixel_values"],
                "labels": torch.tensor([row[self.label_column] for row in rows])}
