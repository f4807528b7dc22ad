"""The result of one evaluation task: a typed record that `hub_cards` turns into a model-index entry.

One record per task and dataset, as `evaluation` and `examples/zero_shot.py` write them (`to_dict()` is the JSON of
`results.json`), and as `hub_cards` reads them (`EvaluationRecord.from_dict` accepts those dicts back):

    {"task": "classification" | "retrieval",
     "name": "classification",                                      # the task's name in logs and metric keys
     "dataset": {"name": "ImageNet-1k", "type": "imagenet-1k", "config": None, "split": "validation", ...},
     "metrics": {"top1": 0.68, "top5": 0.91}                        # fractions in [0, 1]
              | {"image_to_text_recall@1": 0.59, ..., "text_to_image_recall@10": 0.9},
     "protocol": {"num_templates": 80, ...},                        # free-form strings and ints; None: unused
     "num_images": 50000, "num_texts": None, "num_classes": 1000, "skipped_images": 0}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["EvaluationRecord"]

TASKS = ("classification", "retrieval")


@dataclass
class EvaluationRecord:
    """What one evaluation task measured, on which data, with which protocol.

    Attributes:
        task: `"classification"` or `"retrieval"`.
        metrics: metric name → fraction in [0, 1] (`top1`, `top5`; `image_to_text_recall@k`, `text_to_image_recall@k`,
            and with re-ranking also `reranked_image_to_text_recall@k`, ...).
        name: the task's name (metric keys `eval_<name>_<metric>`, plot file names).
        dataset: how a model card names the data: `name`, `type` (a Hub id when there is one), `config`, `split`,
            `revision`, and any other key the card's table should show.
        protocol: the evaluation settings (templates, caption wrapping, re-ranking k).
        num_images, num_texts, num_classes: sizes; `None` where they do not apply.
        skipped_images: images that could not be decoded (counted, never silently dropped).
        plot: path of a PNG of sample retrievals, if one was drawn.
        embeddings: tensors for plots (`return_embeddings=True`); never serialised.
    """

    task: str
    metrics: dict[str, float]
    name: str = ""
    dataset: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    num_images: int | None = None
    num_texts: int | None = None
    num_classes: int | None = None
    skipped_images: int = 0
    plot: str | None = None
    embeddings: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        self.name = self.name or self.task

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable record (without `embeddings`; `None` sizes and `plot` left out)."""
        values = {key: value for key, value in asdict(self).items() if key != "embeddings"}
        return {key: value for key, value in values.items()
                if value is not None or key not in ("num_images", "num_texts", "num_classes", "plot")}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvaluationRecord:
        """A record from its dict (`to_dict`, or a `results.json` entry); unknown keys are ignored."""
        known = {f.name for f in fields(cls)} - {"embeddings"}
        return cls(**{key: value for key, value in values.items() if key in known})
