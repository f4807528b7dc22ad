"""The data layer under every recipe: image-text pairs read from anywhere, images decoded robustly, columns found.

- `load_image`, `UndecodableImageError`: any image cell to RGB, or a clear error that callers count as a skip;
- `load_source`, `undecoded`, `save_dataset`, `write_shards`: Hub names, files, shards and saved datasets in and out,
  through `datasets`;
- `resolve_columns`, `resolve_image_column`: which columns hold the images and captions;
- `DataSourceArguments`: the data options every command parses;
- `image_text_data.demo`: the built-in demo data (rendered scenes, a concept teacher, a word tokenizer).

It imports neither the models nor the recipes; curation, evaluation and the trainers build on it.
"""

from .arguments import DataSourceArguments, TrainingDataArguments
from .columns import CAPTION_COLUMNS, IMAGE_COLUMNS, column_names, resolve_columns, resolve_image_column
from .images import DEFAULT_MAX_IMAGE_PIXELS, UndecodableImageError, load_image
from .sources import OUTPUT_FORMATS, load_source, save_dataset, undecoded, write_shards

__all__ = [
    "CAPTION_COLUMNS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DataSourceArguments",
    "IMAGE_COLUMNS",
    "OUTPUT_FORMATS",
    "TrainingDataArguments",
    "UndecodableImageError",
    "column_names",
    "load_image",
    "load_source",
    "resolve_columns",
    "resolve_image_column",
    "save_dataset",
    "undecoded",
    "write_shards",
]
