"""DiHT data curation as `datasets` map/filter functions: CAT filtering and teacher concept labelling.

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
from .images import UndecodableImageError, load_image
from .report import CurationReport
from .text_spotting import TextSpotter, text_overlap

__all__ = [
    "CAT_RULES",
    "CATSignals",
    "CaptionSignals",
    "ConceptLabeller",
    "CurationReport",
    "PatternCaptionParser",
    "SpacyCaptionParser",
    "TextSpotter",
    "UndecodableImageError",
    "add_cat_signals",
    "analyse_chunks",
    "analyse_doc",
    "build_teacher",
    "concept_vocabulary",
    "cat_filter",
    "label_concepts",
    "load_caption_parser",
    "load_image",
    "teacher_vocabulary",
    "text_overlap",
]
