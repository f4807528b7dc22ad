"""CAT filtering (Complexity, Action, Text spotting) of image-text pairs as `datasets` map/filter functions.

DiHT (Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
arXiv 2301.02280, Sec. 3.1) filters LAION with three rules, quoted in SemDeDup (arXiv 2303.09540) as: the caption
must have *high enough complexity*, the caption must *contain an action*, and *text present in the image must not
substantially overlap the caption*. On a 2.1B English LAION subset this keeps 438M pairs (LAION-CAT).

A row is judged by these rules, in this order, and attributed to the first one it fails (so the report's counts add
up to the number of rows):

========================== ==================================================================================
`empty_caption`            the caption is None, not a string, or only whitespace (ours: such a pair teaches nothing)
`complexity`               `caption_complexity < min_complexity` (DiHT: "C1", at least one object with an
                           attribute or relation; definition in `caption_rules.py`)
`actions`                  `num_actions < min_actions` (DiHT: at least one action, a verb with a subject)
`undecodable_image`        the image cannot be decoded (truncated, not an image, over `max_image_pixels`;
                           `image_text_data/images.py`)
`unreadable_image_shape`   the image is too thin for OCR to judge the text rule (a side under 8 px: spacers,
                           tracking pixels; `text_spotting.py`; only with `text_spotting=True`)
`text_spotting_failed`     the OCR engine failed on this image (any error it raises; only with `text_spotting=True`)
`text_spotting`            `text_overlap > max_text_overlap` (`text_spotting.py`; skipped with `text_spotting=False`)
========================== ==================================================================================

The caption rules are cheap and run first; images are decoded, and OCR runs, only for rows that pass them. Every
row is judged on its own, so results do not depend on `batch_size` or `num_proc`. A pair is kept only when every rule
could judge it: an image the text rule cannot be run on is removed under its own name (ours), and no image, however
shaped, stops the map. Strips longer than 8:1 are read as a mosaic of their pieces (`text_spotting.ocr_view`).

A caption column of lists (COCO: several captions per image) is first turned into one caption per row by
`caption_list` (`image_text_data.captions`: one pair per caption by default); any other non-text caption column is an
error before any row is processed. The report then counts pairs (captions), not images.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from datasets import Dataset, Features, Image, IterableDataset, Value

from image_text_data.captions import apply_caption_policy
from image_text_data.images import DEFAULT_MAX_IMAGE_PIXELS, UndecodableImageError, load_image

from .caption_rules import CaptionParser, load_caption_parser
from .report import CurationReport, StreamCounter
from .text_spotting import TextSpotter, TextSpottingError, UnreadableImageShapeError, text_overlap

logger = logging.getLogger(__name__)

RULES = ("empty_caption", "complexity", "actions", "undecodable_image", "unreadable_image_shape",
         "text_spotting_failed", "text_spotting")
REMOVED_BY = "cat_removed_by"
SIGNAL_FEATURES = Features({
    "caption_complexity": Value("int32"),  # None when the caption rules did not run (empty caption, or disabled)
    "num_actions": Value("int32"),
    "spotted_text": Value("string"),  # None when OCR did not run on the row (it failed an earlier rule)
    "text_overlap": Value("float32"),
    REMOVED_BY: Value("string"),  # None: kept; else the first rule the row fails
})


class CATSignals:
    """Batched `datasets.map` function that adds the CAT signals and the verdict to each row.

    Adds `caption_complexity`, `num_actions`, `spotted_text`, `text_overlap` and `cat_removed_by` (None for a
    kept row, else the name of the first rule in `RULES` it fails). Arguments: see `add_cat_signals`.
    """

    def __init__(self, *, image_column: str, caption_column: str, min_complexity: int, min_actions: int,
                 text_spotting: bool, max_text_overlap: float, caption_parser: CaptionParser,
                 text_spotter: TextSpotter | None, max_image_pixels: int | None):
        self.image_column, self.caption_column = image_column, caption_column
        self.min_complexity, self.min_actions = min_complexity, min_actions
        self.text_spotting, self.max_text_overlap = text_spotting, max_text_overlap
        self.caption_parser, self.text_spotter = caption_parser, text_spotter
        self.max_image_pixels = max_image_pixels

    def _column(self, batch: dict[str, list], name: str) -> list:
        if name not in batch:
            raise ValueError(f"column {name!r} not found in the dataset (columns: {sorted(batch)}); "
                             f"pass image_column=/caption_column= to name yours")
        return batch[name]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        captions = self._column(batch, self.caption_column)
        images = self._column(batch, self.image_column)
        size = len(captions)
        out: dict[str, list[Any]] = {name: [None] * size for name in SIGNAL_FEATURES}

        # 1. empty captions
        valid = [i for i, caption in enumerate(captions) if isinstance(caption, str) and caption.strip()]
        valid_set = set(valid)
        for i in range(size):
            if i not in valid_set:
                out[REMOVED_BY][i] = "empty_caption"

        # 2-3. caption rules (one parser call per batch)
        survivors = valid
        if self.min_complexity > 0 or self.min_actions > 0:
            survivors = []
            for i, signals in zip(valid, self.caption_parser([captions[i].strip() for i in valid])):
                out["caption_complexity"][i], out["num_actions"][i] = signals.complexity, signals.num_actions
                if signals.complexity < self.min_complexity:
                    out[REMOVED_BY][i] = "complexity"
                elif signals.num_actions < self.min_actions:
                    out[REMOVED_BY][i] = "actions"
                else:
                    survivors.append(i)

        # 4-5. decode, then spot text, only for the survivors of the caption rules
        for i in survivors:
            try:
                image = load_image(images[i], max_pixels=self.max_image_pixels)
            except UndecodableImageError as error:
                logger.debug("CAT: row with caption %r skipped, undecodable image: %s", captions[i][:80], error)
                out[REMOVED_BY][i] = "undecodable_image"
                continue
            if self.text_spotting:
                try:
                    spotted = self.text_spotter.spot(image)
                except UnreadableImageShapeError as error:
                    logger.debug("CAT: row with caption %r removed, %s", captions[i][:80], error)
                    out[REMOVED_BY][i] = "unreadable_image_shape"
                    continue
                except TextSpottingError as error:
                    logger.warning("CAT: row with caption %r removed, %s", captions[i][:80], error)
                    out[REMOVED_BY][i] = "text_spotting_failed"
                    continue
                overlap = text_overlap(spotted, captions[i])
                out["spotted_text"][i], out["text_overlap"][i] = spotted, overlap
                if overlap > self.max_text_overlap:
                    out[REMOVED_BY][i] = "text_spotting"
        return out


def _check_columns(dataset: Dataset | IterableDataset, *columns: str) -> None:
    names = dataset.column_names
    if names is None:  # a stream of unknown features: CATSignals checks each batch
        return
    for column in columns:
        if column not in names:
            raise ValueError(f"column {column!r} not found in the dataset (columns: {names}); "
                             f"pass image_column=/caption_column= to name yours")


def _signals(dataset, *, image_column, caption_column, min_complexity, min_actions, text_spotting, max_text_overlap,
             caption_parser, ocr_device, ocr_params, max_image_pixels, num_proc, batch_size, text_spotter=None,
             caption_list="explode", seed=0):
    """The map of `add_cat_signals`; returns the signals with the image column left undecoded, and its feature."""
    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise TypeError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    _check_columns(dataset, image_column, caption_column)
    streaming = isinstance(dataset, IterableDataset)
    if streaming and num_proc is not None and num_proc > 1:
        raise ValueError("num_proc applies to an in-memory Dataset; a streaming IterableDataset is processed "
                         "lazily, in parallel through DataLoader(num_workers=...) or split_dataset_by_node")
    # One caption string per row (lists exploded or picked, other types refused) before any row is judged.
    dataset = apply_caption_policy(dataset, caption_column, caption_list, seed=seed, num_proc=num_proc)
    image_feature = (dataset.features or {}).get(image_column)
    if isinstance(image_feature, Image) and image_feature.decode:
        # Decode ourselves, row by row, so that a corrupt image is counted instead of crashing the worker.
        dataset = dataset.cast_column(image_column, Image(decode=False))
    workers = num_proc if (num_proc or 1) > 1 else 1
    spotter = text_spotter
    if text_spotting and spotter is None:
        threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
        spotter = TextSpotter(device=ocr_device, num_threads=threads, params=ocr_params)
    function = CATSignals(
        image_column=image_column, caption_column=caption_column, min_complexity=min_complexity,
        min_actions=min_actions, text_spotting=text_spotting, max_text_overlap=max_text_overlap,
        caption_parser=load_caption_parser(caption_parser), text_spotter=spotter, max_image_pixels=max_image_pixels,
    )
    features = Features({**dataset.features, **SIGNAL_FEATURES}) if dataset.features is not None else None
    kwargs = {} if streaming else {"num_proc": num_proc, "desc": "CAT signals"}
    signals = dataset.map(function, batched=True, batch_size=batch_size, features=features, **kwargs)
    return signals, image_feature


def _restore(dataset, image_column: str, image_feature):
    if isinstance(image_feature, Image) and image_feature.decode:
        dataset = dataset.cast_column(image_column, image_feature)
    return dataset


def add_cat_signals(
    dataset: Dataset | IterableDataset,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    min_complexity: int = 1,
    min_actions: int = 1,
    text_spotting: bool = True,
    max_text_overlap: float = 0.5,
    caption_parser: Any = None,
    ocr_device: str | None = None,
    ocr_params: dict[str, Any] | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    num_proc: int | None = None,
    batch_size: int = 64,
    text_spotter: TextSpotter | None = None,
    caption_list: str = "explode",
    seed: int = 0,
) -> Dataset | IterableDataset:
    """Add DiHT's CAT signals and verdict to every row, without removing any (arXiv 2301.02280, Sec. 3.1).

    Adds the columns `caption_complexity`, `num_actions` (None when both caption thresholds are <= 0, or the
    caption is empty), `spotted_text`, `text_overlap` (None for rows that failed a caption rule or whose image is
    undecodable: OCR only runs on what survives the caption rules) and `cat_removed_by` (None for a row that passes
    every rule, else the first rule of `RULES` it fails). Use it to inspect what CAT removes; `cat_filter` applies it.

    Args:
        dataset: an in-memory `Dataset` or a streaming `IterableDataset` with an image and a caption column. The
            image column may hold an `Image()` feature, `Image(decode=False)` dicts, raw bytes or PIL images.
        image_column: name of the image column (webdataset shards from img2dataset: `"jpg"`).
        caption_column: name of the caption column (img2dataset shards: `"txt"`).
        min_complexity: keep captions whose complexity is at least this (DiHT's "C1": 1). 0 disables the rule.
        min_actions: keep captions with at least this many actions (DiHT: 1). 0 disables the rule.
        text_spotting: run OCR on the surviving images and apply the text rule.
        max_text_overlap: remove a pair when more than this share of the spotted words occurs in the caption
            (ours: 0.5; not released by the paper; 0 reproduces the "any shared word" third-party rule).
        caption_parser: see `caption_rules.load_caption_parser` (default: an installed spaCy English pipeline,
            else textblob's bundled Pattern tagger, with a warning).
        ocr_device: `"cpu"`, `"cuda"`, or None for CUDA when onnxruntime offers it.
        ocr_params: extra `rapidocr.RapidOCR` parameters (e.g. `{"Det.limit_side_len": 960}`).
        max_image_pixels: images with more pixels are undecodable (decompression bombs); None disables the check.
        num_proc: worker processes for `Dataset.map` (in-memory datasets only).
        batch_size: rows per map batch (one caption-parser call per batch).
        text_spotter: a ready `TextSpotter` (e.g. with another engine or shape limits); overrides `ocr_device` and
            `ocr_params`.
        caption_list: what a caption column of lists becomes: `"explode"` (one pair per caption, with an
            `image_id` column), `"first"`, `"random"` (seeded by `seed`) or `"error"`
            (`image_text_data.captions`).
        seed: seed of `caption_list="random"`.

    Returns:
        The dataset with the five signal columns added (lazily for an `IterableDataset`).

    Raises:
        TypeError: the caption column holds neither text nor lists of text (before any row is processed).
    """
    signals, image_feature = _signals(
        dataset, image_column=image_column, caption_column=caption_column, min_complexity=min_complexity,
        min_actions=min_actions, text_spotting=text_spotting, max_text_overlap=max_text_overlap,
        caption_parser=caption_parser, ocr_device=ocr_device, ocr_params=ocr_params,
        max_image_pixels=max_image_pixels, num_proc=num_proc, batch_size=batch_size, text_spotter=text_spotter,
        caption_list=caption_list, seed=seed,
    )
    return _restore(signals, image_column, image_feature)


def cat_filter(
    dataset: Dataset | IterableDataset,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    min_complexity: int = 1,
    min_actions: int = 1,
    text_spotting: bool = True,
    max_text_overlap: float = 0.5,
    caption_parser: Any = None,
    ocr_device: str | None = None,
    ocr_params: dict[str, Any] | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    num_proc: int | None = None,
    batch_size: int = 64,
    text_spotter: TextSpotter | None = None,
    caption_list: str = "explode",
    seed: int = 0,
    keep_signals: bool = True,
) -> tuple[Dataset | IterableDataset, CurationReport]:
    """Filter image-text pairs with DiHT's CAT rules: complexity, action, text spotting (arXiv 2301.02280).

    Rules, their order and our definitions: module docstring and `add_cat_signals` (same arguments).

    Args:
        dataset, image_column, caption_column, min_complexity, min_actions, text_spotting, max_text_overlap,
        caption_parser, ocr_device, ocr_params, max_image_pixels, num_proc, batch_size, text_spotter, caption_list,
        seed: as in `add_cat_signals`.
        keep_signals: keep `caption_complexity`, `num_actions`, `spotted_text` and `text_overlap` in the output.

    Returns:
        `(filtered, report)`. `filtered` holds the rows that pass every rule, in their original order, with the
        original image feature. `report` is a `dict` with `total`, `kept` and `removed_by_<rule>` for each rule
        of `RULES`; the counts add up to `total`. For a `Dataset` the report is final on return. For an
        `IterableDataset` both are lazy: the report fills as `filtered` is iterated in this process and is final
        after one full pass (see `curation.report`).

    Example:
        >>> from datasets import Dataset
        >>> pairs = Dataset.from_dict({"image": [None, None], "caption": ["a dog", ""]})
        >>> kept, report = cat_filter(pairs, text_spotting=False, caption_parser="textblob")
        >>> report
        {'total': 2, 'kept': 0, 'removed_by_empty_caption': 1, 'removed_by_complexity': 1, 'removed_by_actions': 0, \
'removed_by_undecodable_image': 0, 'removed_by_unreadable_image_shape': 0, 'removed_by_text_spotting_failed': 0, \
'removed_by_text_spotting': 0}
    """
    signals, image_feature = _signals(
        dataset, image_column=image_column, caption_column=caption_column, min_complexity=min_complexity,
        min_actions=min_actions, text_spotting=text_spotting, max_text_overlap=max_text_overlap,
        caption_parser=caption_parser, ocr_device=ocr_device, ocr_params=ocr_params,
        max_image_pixels=max_image_pixels, num_proc=num_proc, batch_size=batch_size, text_spotter=text_spotter,
        caption_list=caption_list, seed=seed,
    )
    dropped = [REMOVED_BY] if keep_signals else list(SIGNAL_FEATURES)
    if isinstance(signals, IterableDataset):
        report = CurationReport(RULES, streaming=True)
        filtered = signals.filter(StreamCounter(report), with_indices=True, input_columns=REMOVED_BY, batched=True,
                                  batch_size=batch_size)
    else:
        report = CurationReport(RULES)
        outcomes = list(signals[REMOVED_BY])
        report.add(outcomes)
        filtered = signals.select([i for i, outcome in enumerate(outcomes) if outcome is None])
        logger.info("CAT filter:\n%s", report.summary())
    return _restore(filtered.remove_columns(dropped), image_column, image_feature), report
