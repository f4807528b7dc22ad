"""Reading and writing the datasets the curation commands work on: Hub names, local files, saved datasets and
webdataset shards (img2dataset's output layout: `{key}.jpg`, `{key}.txt`, `{key}.json` in numbered `.tar` files).

All reading goes through `datasets` (`load_dataset`, `load_from_disk`), so streaming, caching and `num_proc` behave
as users of `datasets` expect; shards are written with `webdataset.ShardWriter`.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable

from datasets import Dataset, DatasetDict, Features, Image, IterableDataset, load_dataset, load_from_disk

FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow",
                 ".tar": "webdataset"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
OUTPUT_FORMATS = ("saved", "parquet", "webdataset")


def _data_files(source: str) -> list[str]:
    path = Path(source)
    if path.is_dir():
        return sorted(str(p) for p in path.iterdir() if p.suffix in FILE_BUILDERS)
    return sorted(glob.glob(source)) if any(c in source for c in "*?[") else ([source] if path.is_file() else [])


def load_source(source: str | list[str], *, split: str = "train", streaming: bool = False,
                cache_dir: str | None = None, name: str | None = None,
                limit: int | None = None) -> Dataset | IterableDataset:
    """Open a dataset given on a command line.

    Args:
        source: a folder written by `save_to_disk`; a file, folder or glob of `.tar` shards (webdataset/img2dataset),
            `.parquet`, `.csv`, `.json(l)` or `.arrow` files, or a list of such files; an image folder (`datasets`'
            `imagefolder`: one sub-folder per class gives a `label` ClassLabel column); or a Hub dataset name
            (`"user/name"`).
        split: the split to read (a saved `DatasetDict` or a Hub dataset).
        streaming: return a lazy `IterableDataset` (a saved dataset is streamed with `to_iterable_dataset()`).
        cache_dir: `datasets` cache folder for files and Hub datasets.
        name: the configuration of a Hub dataset.
        limit: only the first `limit` rows (a trial run).

    Returns:
        A `Dataset`, or an `IterableDataset` with `streaming=True`.
    """
    dataset = _open_source(source, split=split, streaming=streaming, cache_dir=cache_dir, name=name)
    if limit is None:
        return dataset
    return dataset.take(limit) if isinstance(dataset, IterableDataset) else dataset.select(range(min(limit,
                                                                                                   len(dataset))))


def _open_source(source, *, split, streaming, cache_dir, name) -> Dataset | IterableDataset:
    if isinstance(source, (list, tuple)):
        files = sorted(source)
    else:
        path = Path(source)
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            dataset = load_from_disk(source)
            if isinstance(dataset, DatasetDict):
                dataset = dataset[split]
            return dataset.to_iterable_dataset() if streaming else dataset
        files = _data_files(source)
    if files:
        unknown = [f for f in files if Path(f).suffix not in FILE_BUILDERS]
        if unknown:
            raise ValueError(f"cannot tell the format of {unknown[0]!r}; use one of {sorted(FILE_BUILDERS)}")
        builders = {FILE_BUILDERS[Path(f).suffix] for f in files}
        if len(builders) != 1:
            raise ValueError(f"{source} mixes file types {sorted(builders)}; point at one kind")
        return load_dataset(builders.pop(), data_files={split: files}, split=split, streaming=streaming,
                            cache_dir=cache_dir)
    if Path(source).is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(source).rglob("*")):
        return _image_folder(source, split=split, streaming=streaming, cache_dir=cache_dir)
    if Path(source).exists() or source.startswith((".", "/")):
        raise ValueError(f"{source}: no saved dataset and no {sorted(FILE_BUILDERS)} files found there")
    return load_dataset(source, name, split=split, streaming=streaming, cache_dir=cache_dir)


def _image_folder(source: str, *, split: str, streaming: bool, cache_dir: str | None) -> Dataset | IterableDataset:
    # `imagefolder` names its splits after `train/`, `test/`... sub-folders, or puts everything in "train".
    splits = load_dataset("imagefolder", data_dir=source, streaming=streaming, cache_dir=cache_dir)
    if split in splits:
        return splits[split]
    if len(splits) == 1:
        return next(iter(splits.values()))
    raise ValueError(f"{source} has the splits {sorted(splits)}, not {split!r}")


def undecoded(dataset: Dataset | IterableDataset, image_column: str) -> Dataset | IterableDataset:
    """The dataset with its `Image()` column cast to `Image(decode=False)` (cells stay `{"bytes", "path"}`)."""
    feature = (dataset.features or {}).get(image_column)
    if isinstance(feature, Image) and feature.decode:
        return dataset.cast_column(image_column, Image(decode=False))
    return dataset


def _image_bytes(cell: Any) -> bytes | None:
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return cell["bytes"]
        return Path(cell["path"]).read_bytes() if cell.get("path") else None
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if hasattr(cell, "save"):  # a PIL image
        buffer = io.BytesIO()
        cell.convert("RGB").save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()
    return None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def write_shards(rows: Iterable[dict], folder: str, *, image_column: str, caption_column: str | None,
                 shard_size: int = 10_000) -> list[str]:
    """Write rows as img2dataset-style webdataset shards `folder/00000.tar, ...`.

    Each sample holds `{key}.jpg` (the original image bytes, re-encoded only for in-memory PIL images),
    `{key}.txt` (the caption) and `{key}.json` (every other JSON-serialisable column).

    Returns:
        The shard paths.
    """
    import webdataset

    os.makedirs(folder, exist_ok=True)
    with webdataset.ShardWriter(os.path.join(folder, "%05d.tar"), maxcount=shard_size, verbose=0) as sink:
        for index, row in enumerate(rows):
            key = str(row.get("__key__") or f"{index:09d}")
            sample = {"__key__": key}
            data = _image_bytes(row.get(image_column))
            if data is not None:
                sample["jpg"] = data
            if caption_column is not None and isinstance(row.get(caption_column), str):
                sample["txt"] = row[caption_column]
            meta = dict(row["json"]) if isinstance(row.get("json"), dict) else {}  # metadata read from shards
            meta.update({k: v for k, v in row.items()
                         if k not in (image_column, caption_column, "json", "__key__", "__url__") and _jsonable(v)})
            sample["json"] = json.dumps(meta).encode()
            sink.write(sample)
    return sorted(glob.glob(os.path.join(folder, "*.tar")))


def save_dataset(dataset: Dataset | IterableDataset, output_dir: str, *, format: str, image_column: str,
                 caption_column: str | None = None, features: Features | None = None) -> str:
    """Write `dataset` under `output_dir` as a saved dataset (`data/`), parquet (`data.parquet`) or shards
    (`shards/`). A stream is consumed once, in this process; returns the path written."""
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {format!r}")
    if format == "webdataset":
        folder = os.path.join(output_dir, "shards")
        write_shards(dataset, folder, image_column=image_column, caption_column=caption_column)
        return folder
    cache = os.path.join(output_dir, ".generator_cache")
    if isinstance(dataset, IterableDataset):
        # A fresh generation every time (the nonce defeats the generator cache): a stream's live report counts
        # only the rows that actually flow through it.
        stream = dataset
        dataset = Dataset.from_generator(_rows, gen_kwargs={"stream": stream, "nonce": uuid.uuid4().hex},
                                         features=features or stream.features, cache_dir=cache)
    if format == "saved":
        path = os.path.join(output_dir, "data")
        dataset.save_to_disk(path)
    else:
        path = os.path.join(output_dir, "data.parquet")
        dataset.to_parquet(path)
    shutil.rmtree(cache, ignore_errors=True)
    return path


def _rows(stream: IterableDataset, nonce: str):
    yield from stream
