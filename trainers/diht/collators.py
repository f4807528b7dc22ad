"""DiHT's additions to the image-text batches: teacher concept targets and the training augmentation.

Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280 (concept distillation: §3.2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from ..collators import ImageTextCollator

__all__ = ["ConceptTargets", "concept_targets", "diht_collator", "diht_train_transform"]


def concept_targets(
    concept_ids: Sequence[Sequence[int]],
    num_concepts: int,
    concept_scores: Sequence[Sequence[float]] | None = None,
) -> torch.Tensor:
    """`(B, K)` multi-label targets from each image's teacher concepts (DiHT concept distillation, §3.2).

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


class ConceptTargets:
    """Collator add-on: `concept_targets` `(B, num_concepts)` from the rows' `concept_ids` (and scores).

    Args:
        num_concepts: size of the concept vocabulary (the concept head's output size).
        concept_column, concept_scores_column: the columns `curation.label_concepts` writes.
        soft: use the teacher's scores as soft targets instead of 1 at its top-k concepts.
    """

    def __init__(self, num_concepts: int, *, concept_column: str = "concept_ids",
                 concept_scores_column: str = "concept_scores", soft: bool = False):
        self.num_concepts, self.soft = num_concepts, soft
        self.concept_column, self.concept_scores_column = concept_column, concept_scores_column

    def __call__(self, batch: dict[str, Any], rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        if self.concept_column not in rows[0]:
            raise KeyError(f"concept distillation needs column {self.concept_column!r} "
                           "(from curation.label_concepts).")
        scores = [row[self.concept_scores_column] for row in rows] if self.soft else None
        return {"concept_targets": concept_targets([row[self.concept_column] for row in rows], self.num_concepts,
                                                   scores)}


def diht_collator(tokenizer, image_processor, *, num_concepts: int | None = None, soft_concepts: bool = False,
                  **kwargs) -> ImageTextCollator:
    """An `ImageTextCollator` with DiHT's concept targets when `num_concepts` is set (other arguments: its own)."""
    add_ons = [ConceptTargets(num_concepts, soft=soft_concepts)] if num_concepts else []
    return ImageTextCollator(tokenizer, image_processor, add_ons=[*add_ons, *kwargs.pop("add_ons", [])], **kwargs)


def diht_train_transform(image_size: int) -> Callable[[Image.Image], Image.Image]:
    """DiHT's training augmentation (official configs): `RandomResizedCrop(image_size, scale=(0.9, 1.0))`, bicubic.

    timm's implementation, which draws from Python's `random` (so `ImageTextCollator` can seed it per pair).
    """
    from timm.data.transforms import RandomResizedCropAndInterpolation

    return RandomResizedCropAndInterpolation(image_size, scale=(0.9, 1.0), interpolation="bicubic")
