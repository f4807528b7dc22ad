"""DiHT's data curation in one call: CAT filtering, then teacher concept labelling, then the concept vocabulary.

DiHT (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280) trains on CAT-filtered pairs (§3.1) whose
images carry the concepts a frozen teacher predicts (§3.2). `curate` runs both steps on any `datasets` source, as a
training script needs them, and returns what the trainer and the model card need next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, IterableDataset
from torch import nn

from .cat_filter import cat_filter
from .concepts import CONCEPT_IDS, concept_vocabulary, label_concepts
from .report import CurationReport

__all__ = ["CurationResult", "curate"]


@dataclass
class CurationResult:
    """The curated pairs, the CAT report (None without CAT) and the concept vocabulary (empty without concepts)."""

    dataset: Dataset | IterableDataset
    cat_report: CurationReport | None = None
    vocabulary: list[str] = field(default_factory=list)


def curate(
    dataset: Dataset | IterableDataset,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    cat: bool = True,
    cat_options: dict[str, Any] | None = None,
    teacher: str | nn.Module | None = None,
    concept_options: dict[str, Any] | None = None,
    concepts: bool = True,
    num_proc: int | None = None,
    main_process_first: Callable[[str], AbstractContextManager] | None = None,
) -> CurationResult:
    """CAT-filter the pairs, label the kept images with a teacher's concepts, and read the concept vocabulary.

    Args:
        dataset: pairs with an image and a caption column (images best left undecoded:
            `image_text_data.undecoded`).
        image_column, caption_column: the columns.
        cat: apply the CAT filter (`curation.cat_filter`).
        cat_options: more arguments of `cat_filter` (`min_complexity`, `min_actions`, `text_spotting`,
            `ocr_params`, ...).
        teacher: a timm model name or module for `curation.label_concepts`; `None` keeps a `concept_ids` column the
            data already has (labelled earlier with `examples/label_concepts.py`), or labels nothing.
        concept_options: more arguments of `label_concepts` (`top_k`, `return_scores`, `activation`, ...).
        concepts: label concepts at all (False: CAT only, an empty vocabulary).
        num_proc: processes of both map steps.
        main_process_first: a context factory such as `TrainingArguments.main_process_first` (called with a
            description), so that in a distributed run the main process maps first and the others read its cache.

    Returns:
        A `CurationResult`.
    """
    first = main_process_first or (lambda desc: contextlib.nullcontext())
    report = None
    if cat:
        with first("CAT filter"):
            dataset, report = cat_filter(dataset, image_column=image_column, caption_column=caption_column,
                                         num_proc=num_proc, **(cat_options or {}))
    vocabulary: list[str] = []
    if concepts and teacher is not None:
        with first("concept labelling"):
            dataset = label_concepts(dataset, teacher, image_column=image_column, num_proc=num_proc,
                                     **(concept_options or {}))
        vocabulary = concept_vocabulary(dataset)
    elif concepts and CONCEPT_IDS in (dataset.column_names or []):
        vocabulary = concept_vocabulary(dataset)
    return CurationResult(dataset=dataset, cat_report=report, vocabulary=vocabulary)
