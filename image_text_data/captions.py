"""What a caption column may hold, and what to do with a list of captions per image: the one caption policy.

Most image-text sources have one caption per image (LAION, CC3M/12M, img2dataset shards: a string column). COCO and
Flickr30k have several (a column of lists, 5 per image). A caption-level step (CAT's caption rules, a training batch)
needs one string per pair, so a list column is

* `"explode"` (default): one pair per caption, the other columns repeated, with an `image_id` column (the image's row
  position, unless the data already has one) so that the pairs of one image are known;
* `"first"`: the first caption of each image;
* `"random"`: one caption per image drawn with a seed (the same one whatever the batch size, `num_proc` or pass);
* `"error"`: refused.

Exploding is the default because it is what a user of COCO expects from a training set (every caption is a
training pair, as in CLIP-style fine-tuning recipes and in this library's retrieval evaluation, which reads the same
lists) and it loses nothing; the pairs of one image share an `image_id`, which trainers that handle shared images
use (a recipe with one positive per anchor, as DiHT's HN-NCE, may then meet two captions of one image in a batch).
Any other type (numbers, dicts, lists of numbers) is a clear error naming the column and its type, raised before any
row is processed. An image with an empty list of captions becomes one pair with no caption, so that it is counted
(CAT's `empty_caption`, the collator's `skipped_captions`), never dropped silently.
"""

from __future__ import annotations

import random
from typing import Any

from datasets import Dataset, Features, IterableDataset, LargeList, List, Value
from datasets import Sequence as SequenceFeature

__all__ = ["CAPTION_LIST_POLICIES", "apply_caption_policy", "captions_of", "check_caption_column",
           "explode_captions", "select_captions"]

CAPTION_LIST_POLICIES = ("explode", "first", "random", "error")
IMAGE_ID = "image_id"
_TEXT_DTYPES = ("string", "large_string")


def _describe(feature: Any) -> str:
    return feature.dtype if isinstance(feature, Value) else type(feature).__name__


def _kind_of_feature(feature: Any, column: str) -> str:
    """`"text"` or `"list"` for a caption feature; a TypeError naming the column and the type otherwise."""
    if isinstance(feature, Value) and feature.dtype in _TEXT_DTYPES:
        return "text"
    inner = getattr(feature, "feature", None) if isinstance(feature, (List, LargeList, SequenceFeature)) else None
    if isinstance(inner, Value) and inner.dtype in _TEXT_DTYPES:
        return "list"
    inner_text = f" of {_describe(inner)}" if inner is not None else ""
    raise TypeError(f"caption column {column!r} holds {_describe(feature)}{inner_text} values, not text (a string, or "
                    f"a list of strings per image); name the text column with --caption_column / caption_column=")


def _kind_of_value(value: Any, column: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, str) for v in value):
        return "list"
    raise TypeError(f"caption column {column!r} holds {type(value).__name__} values ({value!r:.60}), not text (a "
                    "string, or a list of strings per image); name the text column with --caption_column / "
                    "caption_column=")


def check_caption_column(dataset: Dataset | IterableDataset, column: str) -> str:
    """Whether `column` holds one caption per row (`"text"`) or a list of captions per image (`"list"`).

    Read from the features; a stream whose features are unknown is peeked at (its first row with a caption).

    Raises:
        KeyError: the column is missing.
        TypeError: the column holds anything else (numbers, dicts, lists of numbers), with its name and type.

    Example:
        >>> check_caption_column(Dataset.from_dict({"captions": [["a dog", "a brown dog"]]}), "captions")
        'list'
    """
    features = dataset.features
    if features is not None:
        if column not in features:
            raise KeyError(f"no caption column {column!r} in the dataset's columns {list(features)}")
        return _kind_of_feature(features[column], column)
    for row in dataset.take(16):
        if column not in row:
            raise KeyError(f"no caption column {column!r} in the dataset's columns {sorted(row)}")
        kind = _kind_of_value(row[column], column)
        if kind is not None:
            return kind
    return "text"  # only missing captions seen: the caption rules count them


def captions_of(value: Any, policy: str = "explode", *, column: str = "caption", seed: int = 0,
                key: Any = 0) -> list[str | None]:
    """The captions one cell stands for: `[value]` for a string or None; for a list, all of them (`explode`; `[None]`
    when empty), the first, or one drawn with `seed` and the row's `key` (`random`).

    Raises:
        ValueError: a list under `policy="error"`, or an unknown policy.
        TypeError: a value that is neither text nor a list of text.
    """
    if policy not in CAPTION_LIST_POLICIES:
        raise ValueError(f"caption list policy must be one of {CAPTION_LIST_POLICIES}, got {policy!r}")
    if _kind_of_value(value, column) != "list":
        return [value]
    captions = list(value)
    if policy == "error":
        raise ValueError(f"caption column {column!r} holds a list of captions per image; choose what to do with "
                         f"them: --caption_list explode|first|random (caption_list=)")
    if not captions:
        return [None]
    if policy == "first":
        return captions[:1]
    if policy == "random":
        return [random.Random(f"{seed}/{key}").choice(captions)]
    return captions


class _Exploder:
    """Batched map: one row per caption, other columns repeated, `image_id` = the image's row position."""

    def __init__(self, column: str, add_image_id: bool):
        self.column, self.add_image_id = column, add_image_id

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in batch}
        if self.add_image_id:
            out[IMAGE_ID] = []
        for position, index in enumerate(indices):
            captions = captions_of(batch[self.column][position], "explode", column=self.column)
            for caption in captions:
                for name, values in batch.items():
                    out[name].append(caption if name == self.column else values[position])
                if self.add_image_id:
                    out[IMAGE_ID].append(index)
        return out


class _Selector:
    """Map: one caption per image (`first` / `random`)."""

    def __init__(self, column: str, policy: str, seed: int):
        self.column, self.policy, self.seed = column, policy, seed

    def __call__(self, row: dict, index: int) -> dict:
        return {self.column: captions_of(row[self.column], self.policy, column=self.column, seed=self.seed,
                                         key=index)[0]}


def _text_features(dataset, column: str, extra: dict | None = None) -> Features | None:
    if dataset.features is None:
        return None
    return Features({**dataset.features, column: Value("string"), **(extra or {})})


def explode_captions(dataset: Dataset | IterableDataset, caption_column: str, *, num_proc: int | None = None,
                     batch_size: int = 1000) -> Dataset | IterableDataset:
    """One pair per caption of a list column: every other column repeated, and an `image_id` column (the image's
    row position in `dataset`) unless the data already has one. An empty list gives one pair without caption.

    Works on a `Dataset` (with `num_proc`) and lazily on an `IterableDataset`.

    Example:
        >>> pairs = explode_captions(Dataset.from_dict({"img": [1, 2], "caption": [["a", "b"], ["c"]]}), "caption")
        >>> pairs.to_dict()
        {'img': [1, 1, 2], 'caption': ['a', 'b', 'c'], 'image_id': [0, 0, 1]}
    """
    names = dataset.column_names or []
    add_image_id = IMAGE_ID not in names
    features = _text_features(dataset, caption_column, {IMAGE_ID: Value("int64")} if add_image_id else None)
    kwargs = {} if isinstance(dataset, IterableDataset) else {"num_proc": num_proc, "desc": "One pair per caption"}
    return dataset.map(_Exploder(caption_column, add_image_id), batched=True, batch_size=batch_size,
                       with_indices=True, features=features, **kwargs)


def select_captions(dataset: Dataset | IterableDataset, caption_column: str, policy: str, *, seed: int = 0,
                    num_proc: int | None = None) -> Dataset | IterableDataset:
    """One caption per image of a list column: the first (`policy="first"`) or one drawn with `seed` per row
    (`"random"`: the draw depends on the seed and the row's position only)."""
    if policy not in ("first", "random"):
        raise ValueError(f"select_captions takes policy 'first' or 'random', got {policy!r}")
    features = _text_features(dataset, caption_column)
    kwargs = {} if isinstance(dataset, IterableDataset) else {"num_proc": num_proc, "desc": f"Caption: {policy}"}
    return dataset.map(_Selector(caption_column, policy, seed), with_indices=True, features=features, **kwargs)


def apply_caption_policy(dataset: Dataset | IterableDataset, caption_column: str, policy: str = "explode", *,
                         seed: int = 0, num_proc: int | None = None) -> Dataset | IterableDataset:
    """`dataset` with one caption string per row: unchanged for a text column; for a list column, exploded,
    the first, a seeded draw, or refused, by `policy` (module docstring). Checks the column first.

    Raises:
        KeyError, TypeError: see `check_caption_column`.
        ValueError: a list column under `policy="error"`, or an unknown policy.
    """
    if policy not in CAPTION_LIST_POLICIES:
        raise ValueError(f"caption list policy must be one of {CAPTION_LIST_POLICIES}, got {policy!r}")
    if check_caption_column(dataset, caption_column) == "text":
        return dataset
    if policy == "error":
        raise ValueError(f"caption column {caption_column!r} holds a list of captions per image; choose what to do "
                         "with them: --caption_list explode|first|random (caption_list=)")
    if policy == "explode":
        return explode_captions(dataset, caption_column, num_proc=num_proc)
    return select_captions(dataset, caption_column, policy, seed=seed, num_proc=num_proc)

