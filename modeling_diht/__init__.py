"""DiHT models for transformers (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

Importing this package registers DiHT with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForZeroShotImageClassification`) and marks the classes for remote code, so that `save_pretrained` writes an
`auto_map` and copies `configuration_diht.py`, `modeling_diht.py` and `loss_diht.py` next to the weights. A process
that never imported this package then loads the folder with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES

from .configuration_diht import DIHT_PRESETS, DiHTConfig, DiHTTextConfig, DiHTVisionConfig
from .loss_diht import hn_nce_loss, hn_nce_per_row
from .modeling_diht import DiHTModel, DiHTOutput

for _config_class in (DiHTConfig, DiHTTextConfig, DiHTVisionConfig):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
AutoModel.register(DiHTConfig, DiHTModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(DiHTConfig, DiHTModel, exist_ok=True)
# The zero-shot pipeline checks the model class against this name table, not against registered models; without
# the entry it logs a spurious "not supported" error for a model it then runs correctly.
MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES.setdefault(DiHTConfig.model_type, DiHTModel.__name__)

DiHTConfig.register_for_auto_class()
DiHTModel.register_for_auto_class("AutoModel")

__all__ = [
    "DIHT_PRESETS",
    "DiHTConfig",
    "DiHTModel",
    "DiHTOutput",
    "DiHTTextConfig",
    "DiHTVisionConfig",
    "hn_nce_loss",
    "hn_nce_per_row",
]
