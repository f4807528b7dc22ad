"""Evaluation of image-text models with the protocols their papers report.

- `evaluate_classification`: zero-shot, class names × prompt templates (OpenAI's 80 ImageNet templates by default),
  top-1/top-5 (DiHT, arXiv 2301.02280, zero-shot evaluation); `evaluate_image_classifier`: accuracy of a trained classifier;
- `evaluate_retrieval`: image↔text recall@1/5/10 with several captions per image, computed in chunks, optional
  "a photo of {}." wrapping, optional re-ranking of the top k by a pair re-scorer (ALBEF/COSMO's ITM);
- `ClassificationTask` / `RetrievalTask` bundle data and protocol and run inside `Trainer.evaluate`
  (`trainers.ContrastiveTrainer(eval_tasks=...)`); every result is an `EvaluationRecord`;
- under `torch.distributed` each process encodes its shard of the rows (row i on process i mod W) and the
  embeddings are gathered, so every process computes the same metrics (`encode_image_shards`, `sharding`);
- `plot_retrievals` draws sample queries with their top-k results;
- metrics as `evaluate` modules shipped in `evaluation/metrics/` (`load_metric`), loaded from disk, never the Hub.
"""

from .classification import (
    classification_metrics,
    evaluate_classification,
    evaluate_image_classifier,
    topk,
    zero_shot_classifier,
)
from .encoding import (
    ImageBatchCollator,
    LazyImages,
    encode_image_shards,
    encode_images,
    encode_text_shards,
    encode_texts,
    features,
    image_batches,
)
from .metrics import load_metric
from .plotting import Retrieval, plot_retrievals, sample_retrievals
from .records import EvaluationRecord
from .retrieval import (
    PairRescorer,
    captions_per_image,
    evaluate_retrieval,
    rank_gallery,
    recall_metrics,
    rerank,
    retrieval_metrics,
)
from .tasks import ClassificationTask, RetrievalTask
from .templates import DIHT_CAPTION_TEMPLATE, OPENAI_IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, resolve_templates

__all__ = [
    "ClassificationTask",
    "DIHT_CAPTION_TEMPLATE",
    "EvaluationRecord",
    "ImageBatchCollator",
    "LazyImages",
    "OPENAI_IMAGENET_TEMPLATES",
    "PairRescorer",
    "Retrieval",
    "RetrievalTask",
    "SIMPLE_TEMPLATES",
    "captions_per_image",
    "classification_metrics",
    "encode_image_shards",
    "encode_images",
    "encode_text_shards",
    "encode_texts",
    "evaluate_classification",
    "evaluate_image_classifier",
    "evaluate_retrieval",
    "features",
    "image_batches",
    "load_metric",
    "plot_retrievals",
    "rank_gallery",
    "recall_metrics",
    "rerank",
    "resolve_templates",
    "retrieval_metrics",
    "sample_retrievals",
    "topk",
    "zero_shot_classifier",
]
