"""Training DiHT (and COSMO) with transformers' Trainer: everything that knows about processes and ranks.

- `DiHTTrainer`, `DiHTTrainingArguments`: HN-NCE over the global batch, concept distillation, logit-scale clamp,
  named loss terms (arXiv 2301.02280).
- `ContrastiveTrainer`, `ContrastiveTrainingArguments`, `LogitScaleClampCallback`: the parts another image-text
  recipe reuses.
- `DeltaBallProjectionCallback`: projected gradient descent for the few-shot head (`DiHTForImageClassification`).
- `HNNCELoss`, `concept_distillation_loss`: the losses, distributed-aware.
- `all_gather_with_grad`: the differentiable gather they rest on.
- `plot_training_curves`: the run's loss terms and logit scale as a PNG.
- `ImageTextCollator`, `concept_targets`, `diht_train_transform`: batches with robust decoding.
"""

from .arguments import ContrastiveTrainingArguments, DiHTTrainingArguments
from .callbacks import DeltaBallProjectionCallback, LogitScaleClampCallback
from .collators import ImageTextCollator, concept_targets, diht_train_transform
from .distributed import all_gather_with_grad, is_distributed, rank_and_world_size
from .losses import HNNCELoss, concept_distillation_loss
from .plotting import plot_training_curves
from .trainer import ContrastiveTrainer, DiHTTrainer

__all__ = [
    "ContrastiveTrainer",
    "ContrastiveTrainingArguments",
    "DeltaBallProjectionCallback",
    "DiHTTrainer",
    "DiHTTrainingArguments",
    "HNNCELoss",
    "ImageTextCollator",
    "LogitScaleClampCallback",
    "all_gather_with_grad",
    "concept_distillation_loss",
    "concept_targets",
    "diht_train_transform",
    "is_distributed",
    "plot_training_curves",
    "rank_and_world_size",
]
