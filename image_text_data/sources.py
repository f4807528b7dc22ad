"""Reading and writing the datasets every command works on: Hub names, local files, saved datasets and webdataset
shards (img2dataset's output layout: `{key}.jpg`, `{key}.txt`, `{key}.json` in numbered `.tar` files).

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

# The data-file suffixes `datasets` infers a builder from, which a source given as files may use; img2dataset's
# webdataset shards are `.tar` files.
DATA_FILE_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl", ".arrow", ".tar")
OUTPUT_FORMATS = ("saved", "parquet", "webdataset")


def load_source(source: str | os.PathLike | list[str], *, split: str = "train", streaming: bool = False,
                cache_dir: str | None = None, name: str | None = None,
                limit: int | None = None) -> Dataset | IterableDataset:
    """Open a dataset given on a command line: what `datasets.load_dataset` opens, plus saved datasets.

    `datasets` infers the format itself (parquet, csv, json, arrow, webdataset `.tar` shards, image folders with one
    sub-folder per class); this function only routes the source to the right call and makes the errors say which
    path is wrong instead of falling through to a Hub lookup.

    Args:
        source: a folder written by `save_to_disk`; a folder of data files, webdataset shards (img2dataset) or
            images (`imagefolder`: one sub-folder per class gives a `label` ClassLabel column); a data file, a glob
            of them or a list of them; or a Hub dataset name (`"user/name"`).
        split: the split to read. A folder without split sub-folders has only `train`, which is returned for any
            requested split (an image folder of test images, say).
        streaming: return a lazy `IterableDataset` (a saved dataset is streamed with `to_iterable_dataset()`).
        cache_dir: `datasets` cache folder for files and Hub datasets.
        name: the configuration of a Hub dataset.
        limit: only the first `limit` rows (a trial run).

    Returns:
        A `Dataset`, or an `IterableDataset` with `streaming=True`.

    Raises:
        FileNotFoundError: a local path (or glob) that does not exist or holds no data files.
        ValueError: files of several formats, or a split the data does not have.
    """
    dataset = _open_source(source, split=split, streaming=streaming, cache_dir=cache_dir, name=name)
    if limit is None:
        return dataset
    return dataset.take(limit) if isinstance(dataset, IterableDataset) else dataset.select(range(min(limit,
                                                                                                   len(dataset))))


def _looks_local(source: str) -> bool:
    """A path the user meant as local (a Hub id is `name` or `user/name`, without a file suffix)."""
    return (source.startswith((".", "/", "~")) or source.count("/") > 1
            or source.lower().endswith(DATA_FILE_SUFFIXES) or any(c in source for c in "*?["))


def _open_source(source, *, split, streaming, cache_dir, name) -> Dataset | IterableDataset:
    if isinstance(source, (list, tuple)):
        return _from_files([str(f) for f in source], split=split, streaming=streaming, cache_dir=cache_dir)
    source = os.fspath(source)
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            dataset = load_from_disk(str(path))
            if isinstance(dataset, DatasetDict):
                dataset = _pick_split(dataset, split, source)
            return dataset.to_iterable_dataset() if streaming else dataset
        try:
            splits = load_dataset(str(path.resolve()), streaming=streaming, cache_dir=cache_dir)
        except FileNotFoundError as error:  # datasets' EmptyDatasetError: no file it can read
            raise FileNotFoundError(f"{source}: no saved dataset, data files or images found there ({error})"
                                    ) from error
        return _pick_split(splits, split, source)
    if path.is_file() or any(c in source for c in "*?["):
        files = [source] if path.is_file() else sorted(glob.glob(os.path.expanduser(source)))
        if not files:
            raise FileNotFoundError(f"{source}: no file matches")
        return _from_files(files, split=split, streaming=streaming, cache_dir=cache_dir)
    if _looks_local(source):
        raise FileNotFoundError(f"{source}: no such file or folder (a Hub dataset name looks like 'user/name')")
    return load_dataset(source, name, split=split, streaming=streaming, cache_dir=cache_dir)


def _from_files(files: list[str], *, split, streaming, cache_dir) -> Dataset | IterableDataset:
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such file")
    suffixes = {Path(f).suffix.lower() for f in files}
    if len(suffixes) != 1:  # datasets would read every file with the builder of the first one
        raise ValueError(f"the files mix formats {sorted(suffixes)}; point at one kind")
    files = [str(Path(f).resolve()) for f in files]
    base = os.path.commonpath([str(Path(f).parent) for f in files])
    return load_dataset(base, data_files={split: files}, split=split, streaming=streaming, cache_dir=cache_dir)


def _pick_split(splits, split: str, source: str):
    if split in splits:
        return splits[split]
    if list(splits) == ["train"]:  # a folder without split sub-folders
        return splits["train"]
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
