"""The data layer under every recipe: image-text pairs read from anywhere, images decoded robustly, columns found.

- `load_image`, `UndecodableImageError`, `ImageTooLargeError`, `resized_size`, `processor_shortest_edge`: any image
  cell to RGB, or a clear error that callers count as a skip (also for images a resize would blow up);
- `load_source`, `undecoded`, `save_dataset`, `write_shards`, `EmptyDatasetError`, `TolerantWebDataset`: Hub names,
  files, shards and saved datasets in and out, through `datasets` (an undecodable shard member is repaired and named,
  an empty dataset refused with the reason);
- `apply_caption_policy`, `check_caption_column`, `explode_captions`: one caption string per pair, from text or
  lists of captions (COCO), other types refused;
- `resolve_columns`, `resolve_image_column`: which columns hold the images and captions;
- `DataSourceArguments`: the data options every command parses;
- `image_text_data.demo`: the built-in demo data (rendered scenes, a concept teacher, a word tokenizer).

It imports neither the models nor the recipes; curation, evaluation and the trainers build on it.
"""

from .arguments import DataSourceArguments, TrainingDataArguments
from .captions import (
    CAPTION_LIST_POLICIES,
    apply_caption_policy,
    captions_of,
    check_caption_column,
    explode_captions,
    select_captions,
)
from .columns import CAPTION_COLUMNS, IMAGE_COLUMNS, column_names, resolve_columns, resolve_image_column
from .images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_RESIZED_PIXELS,
    ImageTooLargeError,
    UndecodableImageError,
    load_image,
    processor_shortest_edge,
    resized_size,
)
from .sources import (
    OUTPUT_FORMATS,
    EmptyDatasetError,
    TolerantWebDataset,
    load_source,
    save_dataset,
    undecoded,
    write_shards,
)

__all__ = [
    "CAPTION_COLUMNS",
    "CAPTION_LIST_POLICIES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_RESIZED_PIXELS",
    "DataSourceArguments",
    "EmptyDatasetError",
    "IMAGE_COLUMNS",
    "ImageTooLargeError",
    "OUTPUT_FORMATS",
    "TolerantWebDataset",
    "TrainingDataArguments",
    "UndecodableImageError",
    "apply_caption_policy",
    "captions_of",
    "check_caption_column",
    "column_names",
    "explode_captions",
    "load_image",
    "load_source",
    "processor_shortest_edge",
    "resized_size",
    "resolve_columns",
    "resolve_image_column",
    "save_dataset",
    "select_captions",
    "undecoded",
    "write_shards",
]
