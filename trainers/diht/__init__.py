"""The DiHT recipe on the shared trainer core (Radenovic et al., CVPR 2023, arXiv 2301.02280).

- `DiHTTrainer`, `DiHTTrainingArguments`: HN-NCE over the global batch, concept distillation, the logit-scale clamp;
- `HNNCELoss`, `concept_distillation_loss`: the losses, distributed-aware;
- `ConceptTargets`, `concept_targets`, `diht_collator`, `diht_train_transform`: DiHT's batch additions;
- few-shot with prompt initialisation: `DeltaBallProjectionCallback`, `few_shot_search`, `sample_shots`,
  `with_lora`, `merge_lora`.
"""

from .arguments import DiHTTrainingArguments
from .collators import ConceptTargets, concept_targets, diht_collator, diht_train_transform
from .few_shot import (
    DeltaBallProjectionCallback,
    FewShotCandidate,
    FewShotResult,
    LoraSettings,
    few_shot_learning_rate,
    few_shot_search,
    merge_lora,
    sample_shots,
    with_lora,
)
from .losses import HNNCELoss, concept_distillation_loss
from .trainer import DiHTTrainer

__all__ = [
    "ConceptTargets",
    "DeltaBallProjectionCallback",
    "DiHTTrainer",
    "DiHTTrainingArguments",
    "FewShotCandidate",
    "FewShotResult",
    "HNNCELoss",
    "LoraSettings",
    "concept_distillation_loss",
    "concept_targets",
    "diht_collator",
    "diht_train_transform",
    "few_shot_learning_rate",
    "few_shot_search",
    "merge_lora",
    "sample_shots",
    "with_lora",
]
