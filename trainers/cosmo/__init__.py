"""The COSMO recipe on the shared trainer core (Byun, Kim and Moon, CVPR 2024, arXiv 2312.06112; MAFA in v2).

- `CosmoTrainer`, `CosmoTrainingArguments`: ITC over the global batch with S-ITC, ITM and MLM with the mined pairs,
  retrieval fine-tuning;
- `GroupedMiniBatchSampler`, `greedy_chain`: GRIT's grouped mini-batches (arXiv 2208.04060), resumable;
- `ConnectionMiner`, `MinedBatch`, `mining_quality`: efficient connection mining with a frozen ITM model, its
  decisions per batch, and their precision and recall against a known truth;
- `ITMDiscriminator` (the adapter interface), `CosmoDiscriminator`, `BlipDiscriminator`: the frozen ITM models;
- `MaskedCaptions`, `mask_rows`, `cosmo_train_transform`: the batch additions (MLM masking, ALBEF's crop);
- `itm_prior_loss`: the ITM loss of a model that predicts only the label mix (the 0.6365 sentinel).
"""

from .arguments import CosmoTrainingArguments
from .collators import MaskedCaptions, cosmo_train_transform, mask_rows
from .grouping import GroupedMiniBatchSampler, greedy_chain
from .mining import (
    BlipDiscriminator,
    ConnectionMiner,
    CosmoDiscriminator,
    ITMDiscriminator,
    MinedBatch,
    mining_quality,
)
from .trainer import CosmoTrainer, itm_prior_loss

__all__ = [
    "BlipDiscriminator",
    "ConnectionMiner",
    "CosmoDiscriminator",
    "CosmoTrainer",
    "CosmoTrainingArguments",
    "GroupedMiniBatchSampler",
    "ITMDiscriminator",
    "MaskedCaptions",
    "MinedBatch",
    "cosmo_train_transform",
    "greedy_chain",
    "itm_prior_loss",
    "mask_rows",
    "mining_quality",
]
