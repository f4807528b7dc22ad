"""Zero-shot evaluation of DiHT/CLIP checkpoints with the protocols DiHT reports (arXiv 2301.02280, PAPERS.md §1.6).

- `evaluate_classification`: class names × prompt templates (OpenAI's 80 ImageNet templates by default), top-1/top-5;
- `evaluate_retrieval`: image↔text recall@1/5/10 with several captions per image, optional "a photo of {}." wrapping;
- `ClassificationTask`/`RetrievalTask` bundle data and protocol; `ZeroShotEvaluationCallback` runs them during
  training; `plot_retrievals` draws sample queries with their top-k results;
- metrics as `evaluate` modules shipped in `evaluation/metrics/` (`load_metric`), loaded from disk, never the Hub.
"""

from .callback import ZeroShotEvaluationCallback
from .metrics import load_metric
from .plotting import Retrieval, plot_retrievals, sample_retrievals
from .tasks import ClassificationTask, RetrievalTask, flat_metrics
from .templates import DIHT_CAPTION_TEMPLATE, OPENAI_IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, resolve_templates
from .zero_shot import (
    captions_per_image,
    classification_metrics,
    encode_images,
    encode_texts,
    evaluate_classification,
    evaluate_retrieval,
    image_batches,
    retrieval_metrics,
    zero_shot_classifier,
)

__all__ = [
    "ClassificationTask",
    "DIHT_CAPTION_TEMPLATE",
    "OPENAI_IMAGENET_TEMPLATES",
    "Retrieval",
    "RetrievalTask",
    "SIMPLE_TEMPLATES",
    "ZeroShotEvaluationCallback",
    "captions_per_image",
    "classification_metrics",
    "encode_images",
    "encode_texts",
    "evaluate_classification",
    "evaluate_retrieval",
    "flat_metrics",
    "image_batches",
    "load_metric",
    "plot_retrievals",
    "resolve_templates",
    "retrieval_metrics",
    "sample_retrievals",
    "zero_shot_classifier",
]
