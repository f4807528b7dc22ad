"""Evaluation tasks as values: what to evaluate on, with which protocol, ready to run on any checkpoint.

A task bundles the data and the protocol options of `evaluate_classification` or `evaluate_retrieval`, so the same
task runs from `examples/zero_shot.py`, at the end of pretraining, and inside `Trainer.evaluate`
(`trainers.ContrastiveTrainer(eval_tasks=[...])`, metrics `eval_<name>_<metric>`). `run` returns the
`EvaluationRecord` that `hub_cards` turns into a model-index entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .classification import evaluate_classification
from .records import EvaluationRecord
from .retrieval import PairRescorer, evaluate_retrieval
from .templates import OPENAI_IMAGENET_TEMPLATES

__all__ = ["ClassificationTask", "RetrievalTask"]


@dataclass
class ClassificationTask:
    """Zero-shot classification of `dataset` with a prompt ensemble (see `evaluate_classification`).

    Args:
        dataset: rows with an image and an integer label.
        name: the task's name in logs, metric keys and result files.
        class_names: names written into the prompts (default: the label column's `ClassLabel` names).
        templates: prompt templates (default: OpenAI's 80 ImageNet templates).
        image_column, label_column: column names.
        dataset_info: how a model card names the data, e.g. `{"name": "ImageNet-1k", "type": "imagenet-1k",
            "split": "validation"}`.
    """

    dataset: Any
    name: str = "classification"
    class_names: Sequence[str] | None = None
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES
    image_column: str = "image"
    label_column: str = "label"
    dataset_info: dict[str, Any] = field(default_factory=dict)

    def run(self, model, tokenizer, image_processor, *, batch_size: int = 64, num_workers: int = 0,
            return_embeddings: bool = False) -> EvaluationRecord:
        record = evaluate_classification(
            model, tokenizer, image_processor, self.dataset, class_names=self.class_names, templates=self.templates,
            image_column=self.image_column, label_column=self.label_column, batch_size=batch_size,
            num_workers=num_workers, return_embeddings=return_embeddings,
        )
        record.name, record.dataset = self.name, dict(self.dataset_info)
        return record


@dataclass
class RetrievalTask:
    """Zero-shot image↔text retrieval on `dataset` (see `evaluate_retrieval`), optionally re-ranked.

    Args:
        dataset: one row per image, with one caption or a list of captions.
        name: the task's name in logs, metric keys and result files.
        caption_template: wrap every caption (`"a photo of {}."` is the DiHT protocol), or `None`.
        image_column, caption_column: column names.
        dataset_info: how a model card names the data, e.g. `{"name": "COCO 5k", "type": "coco", "split": "test"}`.
        rescorer: a pair re-scorer for the top `rerank_k` candidates of every query (ALBEF/COSMO's ITM re-ranking,
            `evaluation.itm_rerank.ITMRescorer`), or `None`.
        rerank_k: candidates re-ranked per query (256 for COCO, 128 for Flickr30k in ALBEF and COSMO).
    """

    dataset: Any
    name: str = "retrieval"
    caption_template: str | None = None
    image_column: str = "image"
    caption_column: str = "caption"
    dataset_info: dict[str, Any] = field(default_factory=dict)
    rescorer: PairRescorer | None = None
    rerank_k: int = 256

    def run(self, model, tokenizer, image_processor, *, batch_size: int = 64, num_workers: int = 0,
            return_embeddings: bool = False) -> EvaluationRecord:
        record = evaluate_retrieval(
            model, tokenizer, image_processor, self.dataset, image_column=self.image_column,
            caption_column=self.caption_column, caption_template=self.caption_template, batch_size=batch_size,
            num_workers=num_workers, rescorer=self.rescorer, rerank_k=self.rerank_k,
            return_embeddings=return_embeddings,
        )
        record.name, record.dataset = self.name, dict(self.dataset_info)
        return record
