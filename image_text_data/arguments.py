"""The data arguments every command parses: where the pairs are, and which columns hold them.

One dataclass for `transformers.HfArgumentParser`, so that `examples/pretrain.py`, `filter_cat.py`,
`label_concepts.py`, `zero_shot.py`, `few_shot.py` (and a second recipe's pretraining script) take the same
`--dataset_name`, `--dataset_path`, `--train_files`, `--streaming` and column options.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset, IterableDataset

from .captions import CAPTION_LIST_POLICIES
from .sources import load_source

__all__ = ["DataSourceArguments", "TrainingDataArguments"]


@dataclass
class DataSourceArguments:
    """Where a command reads its image-text data from (give at most one source; none means the built-in demo)."""

    dataset_name: str | None = field(default=None, metadata={
        "help": "A Hub dataset name, or a local folder of data files, webdataset shards or images "
                "(datasets.load_dataset infers the format)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The configuration of a Hub dataset."})
    dataset_path: str | None = field(default=None, metadata={"help": "A folder written by save_to_disk."})
    train_files: list[str] | None = field(default=None, metadata={
        "help": "Data files: parquet/csv/json/arrow, or img2dataset .tar shards (one format)."})
    streaming: bool = field(default=False, metadata={"help": "Read the data lazily instead of downloading it whole."})
    image_column: str | None = field(default=None, metadata={
        "help": "The image column (default: the first of image, img, jpg, jpeg, png, webp)."})
    caption_column: str | None = field(default=None, metadata={
        "help": "The caption column (default: the first of caption, txt, text)."})
    caption_list: str = field(default="explode", metadata={
        "help": "A caption column of lists (COCO: several captions per image) becomes: explode (one pair per caption, "
                "with an image_id column), first, random (seeded), or error. Other non-text columns are an error.",
        "choices": list(CAPTION_LIST_POLICIES)})
    max_samples: int | None = field(default=None, metadata={"help": "Read only the first N rows (a trial run)."})

    def __post_init__(self):
        given = [name for name in ("dataset_name", "dataset_path", "train_files") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give one data source, not {' and '.join('--' + name for name in given)}")

    @property
    def has_source(self) -> bool:
        """Whether any source was given (commands run their built-in demo data otherwise)."""
        return bool(self.dataset_name or self.dataset_path or self.train_files)

    @property
    def source_name(self) -> str | None:
        """The source as a card or a results file names it."""
        if self.train_files:
            return self.train_files[0] if len(self.train_files) == 1 else f"{len(self.train_files)} files"
        return self.dataset_name or self.dataset_path

    def load(self, split: str = "train") -> Dataset | IterableDataset:
        """The given source's `split`, through `image_text_data.load_source`.

        Raises:
            ValueError: no source was given, or `--train_files` was asked for another split than `train`
                (files hold one split; give held-out data with `--dataset_path` or `--dataset_name`).
        """
        if not self.has_source:
            raise ValueError("no data source: pass --dataset_name, --dataset_path or --train_files")
        if self.train_files and split != "train":
            raise ValueError(f"--train_files holds the train split only, not {split!r}; give held-out data with "
                             "--dataset_path or --dataset_name")
        source = self.train_files or self.dataset_path or self.dataset_name
        return load_source(source, split=split, streaming=self.streaming, name=self.dataset_config_name,
                           limit=self.max_samples)


@dataclass
class TrainingDataArguments(DataSourceArguments):
    """The data arguments of a pretraining script: the source, its splits and the held-out evaluation."""

    train_split: str = field(default="train", metadata={"help": "The split to train on."})
    eval_split: str | None = field(default=None, metadata={
        "help": "A held-out split evaluated zero-shot at the end (and with --eval_strategy during training)."})
    label_column: str = field(default="label", metadata={"help": "The class column of the eval split (zero-shot)."})
    prompt_template: str = field(default="a photo of a {}.", metadata={"help": "Zero-shot prompt for class names."})
    max_eval_samples: int = field(default=2000, metadata={"help": "Cap on held-out pairs evaluated."})
    train_augmentation: bool = field(default=True, metadata={"help": "The recipe's random crop of training images."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of the map steps."})
