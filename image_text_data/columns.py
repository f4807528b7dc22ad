"""Which columns of an image-text dataset hold the images and the captions.

Hub datasets name them `image`/`caption` (or `text`), img2dataset's webdataset shards `jpg`/`txt`, image folders
`image`; every command finds them the same way, and a user's own names are passed explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CAPTION_COLUMNS", "IMAGE_COLUMNS", "column_names", "resolve_columns", "resolve_image_column"]

# Looked for in this order when no column is named.
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
CAPTION_COLUMNS = ("caption", "txt", "text")


def column_names(dataset) -> list[str]:
    """The columns of a `Dataset`, or of an `IterableDataset` whose features are known (else `[]`)."""
    names = getattr(dataset, "column_names", None)
    if names:
        return list(names)
    return list((getattr(dataset, "features", None) or {}).keys())


def _resolve(names: Sequence[str], requested: str | None, candidates: Sequence[str], kind: str) -> str:
    column = requested or next((c for c in candidates if c in names), None)
    if column is None or (names and column not in names):
        wanted = repr(requested) if requested else f"(none of {list(candidates)})"
        raise ValueError(f"no {kind} column {wanted} in the dataset's columns {list(names)}; pass --{kind}_column")
    return column


def resolve_image_column(dataset, requested: str | None = None) -> str:
    """`requested`, checked against the dataset's columns, or the first of `IMAGE_COLUMNS` it has."""
    return _resolve(column_names(dataset), requested, IMAGE_COLUMNS, "image")


def resolve_columns(dataset, image_column: str | None = None, caption_column: str | None = None) -> tuple[str, str]:
    """`(image column, caption column)`: the requested ones, checked, or the first of `IMAGE_COLUMNS` and
    `CAPTION_COLUMNS` the dataset has.

    Raises:
        ValueError: a column is missing; the message lists the dataset's columns.

    Example:
        >>> from datasets import Dataset
        >>> resolve_columns(Dataset.from_dict({"jpg": [b""], "txt": ["a dog"]}))
        ('jpg', 'txt')
    """
    names = column_names(dataset)
    return (_resolve(names, image_column, IMAGE_COLUMNS, "image"),
            _resolve(names, caption_column, CAPTION_COLUMNS, "caption"))
