"""Training image-text recipes with transformers' Trainer: everything that knows about processes and ranks.

The recipe-neutral core:
- `ContrastiveTrainer`, `ContrastiveTrainingArguments`: named loss terms, collator counters, declared parameter
  clamps (`ParameterClampCallback`), a batch-sampler hook with an embedding tap and checkpointed sampler state
  (`trainers.sampling`), zero-shot evaluation inside `Trainer.evaluate`;
- `GlobalBatchContrastiveLoss`, `cross_entropy_rows`, `multi_positive_targets`: a contrastive loss over the global
  batch for any row loss, with index or soft (multi-positive, smoothed) targets;
- `all_gather_with_grad`: the differentiable gather it rests on;
- `ImageTextCollator`, `ImageLabelCollator`: batches with robust decoding; `plot_training_curves`.

The recipes, re-exported here: DiHT (arXiv 2301.02280) in `trainers.diht`; COSMO (arXiv 2312.06112) in
`trainers.cosmo`.
"""

from .arguments import ContrastiveTrainingArguments
from .clamp import ParameterClampCallback, declared_clamps
from .collators import BatchAddOn, ImageLabelCollator, ImageTextCollator
from .contrastive_loss import GlobalBatchContrastiveLoss, cross_entropy_rows, multi_positive_targets
from .cosmo import (
    BlipDiscriminator,
    ConnectionMiner,
    CosmoDiscriminator,
    CosmoTrainer,
    CosmoTrainingArguments,
    GroupedMiniBatchSampler,
    ITMDiscriminator,
    MaskedCaptions,
    MinedBatch,
    cosmo_train_transform,
    greedy_chain,
    itm_prior_loss,
    mask_rows,
    mining_quality,
)
from .demo_models import tiny_cosmo_config, tiny_diht_config, train_demo_discriminator
from .diht import (
    ConceptTargets,
    DeltaBallProjectionCallback,
    DiHTTrainer,
    DiHTTrainingArguments,
    FewShotCandidate,
    FewShotResult,
    HNNCELoss,
    LoraSettings,
    concept_distillation_loss,
    concept_targets,
    diht_collator,
    diht_train_transform,
    few_shot_learning_rate,
    few_shot_search,
    merge_lora,
    sample_shots,
    with_lora,
)
from .distributed import all_gather_values, all_gather_with_grad, is_distributed, rank_and_world_size
from .plotting import plot_training_curves
from .sampling import BatchSamplerFactory, EmbeddingTap, TrainBatchSampler, load_sampler_state, save_sampler_state
from .trainer import ContrastiveTrainer

__all__ = [
    "BatchAddOn",
    "BatchSamplerFactory",
    "BlipDiscriminator",
    "ConceptTargets",
    "ConnectionMiner",
    "ContrastiveTrainer",
    "ContrastiveTrainingArguments",
    "CosmoDiscriminator",
    "CosmoTrainer",
    "CosmoTrainingArguments",
    "DeltaBallProjectionCallback",
    "DiHTTrainer",
    "DiHTTrainingArguments",
    "EmbeddingTap",
    "FewShotCandidate",
    "FewShotResult",
    "GlobalBatchContrastiveLoss",
    "GroupedMiniBatchSampler",
    "HNNCELoss",
    "ITMDiscriminator",
    "ImageLabelCollator",
    "ImageTextCollator",
    "LoraSettings",
    "MaskedCaptions",
    "MinedBatch",
    "ParameterClampCallback",
    "TrainBatchSampler",
    "all_gather_values",
    "all_gather_with_grad",
    "concept_distillation_loss",
    "concept_targets",
    "cosmo_train_transform",
    "cross_entropy_rows",
    "declared_clamps",
    "diht_collator",
    "diht_train_transform",
    "few_shot_learning_rate",
    "few_shot_search",
    "greedy_chain",
    "is_distributed",
    "itm_prior_loss",
    "load_sampler_state",
    "mask_rows",
    "merge_lora",
    "mining_quality",
    "multi_positive_targets",
    "plot_training_curves",
    "rank_and_world_size",
    "sample_shots",
    "save_sampler_state",
    "tiny_cosmo_config",
    "tiny_diht_config",
    "train_demo_discriminator",
    "with_lora",
]
