"""COSMO models for transformers (Byun, Kim and Moon, CVPR 2024, https://arxiv.org/abs/2312.06112; MAFA in v2).

Importing this package registers COSMO with the Auto classes (`AutoConfig`; `AutoModel` and
`AutoModelForZeroShotImageClassification` -> `CosmoModel`; `AutoModelForPreTraining` -> `CosmoForPreTraining`) and
marks the classes for remote code, so that `save_pretrained` writes an `auto_map` and copies the modeling files next
to the weights. A process that never imported this package then loads the folder with `trust_remote_code=True`.

`CosmoForImageTextRetrieval` has no Auto class: transformers has none for image-text matching (BLIP's retrieval
model is in no Auto mapping). `CosmoForPreTraining` subclasses it, so `AutoModelForPreTraining` gives a model with
every retrieval method, and `CosmoForImageTextRetrieval.from_pretrained` loads any COSMO folder.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForZeroShotImageClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES

from .configuration_cosmo import COSMO_PRESETS, CosmoConfig, CosmoTextConfig, CosmoVisionConfig
from .loss_cosmo import (
    hn_nce_itc_loss,
    itc_logits,
    itc_targets_from_ids,
    itm_loss,
    mlm_loss,
    select_hard_negatives,
    smoothed_itc_loss,
)
from .modeling_cosmo import AUTO_MAP as COSMO_AUTO_MAP
from .modeling_cosmo import CosmoForImageTextRetrieval, CosmoForPreTraining, CosmoModel
from .modeling_cosmo_layers import CosmoCrossAttentionCache
from .modeling_cosmo_outputs import CosmoForPreTrainingOutput, CosmoImageTextRetrievalOutput, CosmoOutput
from .modeling_cosmo_pretraining import hard_negative_pairs
from .modeling_cosmo_towers import CosmoPreTrainedModel, CosmoTextModel, CosmoVisionModel
from .processing_cosmo import CosmoDataCollator, cosmo_image_processor

# The files a saved folder carries for `trust_remote_code=True` (modeling_cosmo.py and its relative imports); they
# import only the standard library, torch, transformers and one another.
COSMO_REMOTE_CODE_FILES = (
    "configuration_cosmo.py",
    "modeling_cosmo.py",
    "modeling_cosmo_layers.py",
    "modeling_cosmo_outputs.py",
    "modeling_cosmo_pretraining.py",
    "modeling_cosmo_towers.py",
    "loss_cosmo.py",
    "warm_start_cosmo.py",
)

for _config_class in (CosmoConfig, CosmoTextConfig, CosmoVisionConfig):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
AutoModel.register(CosmoConfig, CosmoModel, exist_ok=True)
AutoModel.register(CosmoTextConfig, CosmoTextModel, exist_ok=True)
AutoModel.register(CosmoVisionConfig, CosmoVisionModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(CosmoConfig, CosmoModel, exist_ok=True)
AutoModelForPreTraining.register(CosmoConfig, CosmoForPreTraining, exist_ok=True)
# The zero-shot pipeline checks the model class against this name table, not against registered models; without
# the entry it logs a spurious "not supported" error for a model it then runs correctly.
MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES.setdefault(CosmoConfig.model_type, CosmoModel.__name__)

CosmoConfig.register_for_auto_class()
CosmoModel.register_for_auto_class("AutoModel")
CosmoForPreTraining.register_for_auto_class("AutoModelForPreTraining")
# CosmoForImageTextRetrieval inherits CosmoModel's registration: it saves the modeling files, and the auto_map of
# every saved folder names the three classes (`CosmoModel.save_pretrained`).

__all__ = [
    "COSMO_AUTO_MAP",
    "COSMO_PRESETS",
    "COSMO_REMOTE_CODE_FILES",
    "CosmoConfig",
    "CosmoCrossAttentionCache",
    "CosmoDataCollator",
    "CosmoForImageTextRetrieval",
    "CosmoForPreTraining",
    "CosmoForPreTrainingOutput",
    "CosmoImageTextRetrievalOutput",
    "CosmoModel",
    "CosmoOutput",
    "CosmoPreTrainedModel",
    "CosmoTextConfig",
    "CosmoTextModel",
    "CosmoVisionConfig",
    "CosmoVisionModel",
    "cosmo_image_processor",
    "hard_negative_pairs",
    "hn_nce_itc_loss",
    "itc_logits",
    "itc_targets_from_ids",
    "itm_loss",
    "mlm_loss",
    "select_hard_negatives",
    "smoothed_itc_loss",
]
