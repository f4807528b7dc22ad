"""DiHT data curation as `datasets` map/filter functions: CAT filtering and teacher concept labelling.

`curate` runs both, as a training script needs them; `cat_filter` and `label_concepts` are the steps on their own.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280 (CAT rules as quoted in SemDeDup, https://arxiv.org/abs/2303.09540).
"""

from .caption_rules import (
    CaptionSignals,
    PatternCaptionParser,
    SpacyCaptionParser,
    analyse_chunks,
    analyse_doc,
    load_caption_parser,
)
from .cat_filter import RULES as CAT_RULES
from .cat_filter import CATSignals, add_cat_signals, cat_filter
from .concepts import ConceptLabeller, build_teacher, concept_vocabulary, label_concepts, teacher_vocabulary
from .pipeline import CurationResult, curate
from .report import CurationReport
from .text_spotting import TextSpotter, TextSpottingError, UnreadableImageShapeError, text_overlap

__all__ = [
    "CAT_RULES",
    "CATSignals",
    "CaptionSignals",
    "ConceptLabeller",
    "CurationReport",
    "CurationResult",
    "PatternCaptionParser",
    "SpacyCaptionParser",
    "TextSpotter",
    "TextSpottingError",
    "UnreadableImageShapeError",
    "add_cat_signals",
    "analyse_chunks",
    "analyse_doc",
    "build_teacher",
    "cat_filter",
    "concept_vocabulary",
    "curate",
    "label_concepts",
    "load_caption_parser",
    "teacher_vocabulary",
    "text_overlap",
]
