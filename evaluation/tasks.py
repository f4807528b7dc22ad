"""Zero-shot evaluation tasks as values: what to evaluate on, with which protocol, ready to run on any checkpoint.

A task bundles the data and the protocol options of `evaluate_classification` or `evaluate_retrieval`, so the same
task runs from `examples/zero_shot.py`, at the end of `examples/pretrain.py`, and every N steps during training
(`ZeroShotEvaluationCallback`). `run` returns the result record that `hub_cards` turns into a model-index entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .templates import OPENAI_IMAGENET_TEMPLATES
from .zero_shot import evaluate_classification, evaluate_retrieval


@dataclass
class ClassificationTask:
    """Zero-shot classification of `dataset` with a prompt ensemble (see `evaluate_classification`).

    Args:
        dataset: rows with an image and an integer label.
        name: the task's name in logs and result files.
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
            return_embeddings: bool = False) -> dict[str, Any]:
        record = evaluate_classification(
            model, tokenizer, image_processor, self.dataset, class_names=self.class_names, templates=self.templates,
            image_column=self.image_column, label_column=self.label_column, batch_size=batch_size,
            num_workers=num_workers, return_embeddings=return_embeddings,
        )
        return {"name": self.name, "dataset": dict(self.dataset_info), **record}


@dataclass
class RetrievalTask:
    """Zero-shot image↔text retrieval on `dataset` (see `evaluate_retrieval`).

    Args:
        dataset: one row per image, with one caption or a list of captions.
        name: the task's name in logs and result files.
        caption_template: wrap every caption (`"a photo of {}."` is the DiHT protocol), or `None`.
        image_column, caption_column: column names.
        dataset_info: how a model card names the data, e.g. `{"name": "COCO 5k", "type": "coco", "split": "test"}`.
    """

    dataset: Any
    name: str = "retrieval"
    caption_template: str | None = None
    image_column: str = "image"
    caption_column: str = "caption"
    dataset_info: dict[str, Any] = field(default_factory=dict)

    def run(self, model, tokenizer, image_processor, *, batch_size: int = 64, num_workers: int = 0,
            return_embeddings: bool = False) -> dict[str, Any]:
        record = evaluate_retrieval(
            model, tokenizer, image_processor, self.dataset, image_column=self.image_column,
            caption_column=self.caption_column, caption_template=self.caption_template, batch_size=batch_size,
            num_workers=num_workers, return_embeddings=return_embeddings,
        )
        return {"name": self.name, "dataset": dict(self.dataset_info), **record}


def flat_metrics(records: Sequence[dict[str, Any]], prefix: str = "zero_shot") -> dict[str, float]:
    """`{"<prefix>/<task name>/<metric>": value}` of several result records, for logs."""
    return {f"{prefix}/{record['name']}/{metric}": value
            for record in records for metric, value in record["metrics"].items()}
