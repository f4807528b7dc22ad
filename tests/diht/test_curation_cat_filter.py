"""Specification of `curation.cat_filter` (DiHT's CAT filtering, arXiv 2301.02280) on hand-written pairs.

`tests.helpers.cat_rows()` lists each pair with the first rule it fails, worked out by hand from the documented
rule definitions; the tests check the filter, its report and its invariance to `num_proc`, batch size and streaming.
"""

import json
from collections import Counter

import pytest
import webdataset
from datasets import Dataset, Features, Image, IterableDataset, Value, load_dataset
from PIL import Image as PILImage

from curation import CAT_RULES, add_cat_signals, cat_filter
from tests.helpers import (
    ACTION_CAPTION,
    cat_dataset,
    cat_rows,
    encode,
    image_mode_rows,
    scene,
    text_image,
    truncated_jpeg,
)

PARSER = "textblob"  # the offline parser; the spaCy path is specified in test_curation_caption_rules.py
EXPECTED = [rule for _, _, rule in cat_rows()]
EXPECTED_KEPT = [row for row, rule in enumerate(EXPECTED) if rule is None]
SIGNALS = ["caption_complexity", "num_actions", "spotted_text", "text_overlap"]


def expected_report(outcomes) -> dict:
    counts = Counter(outcomes)
    return {"total": len(outcomes), "kept": counts[None], **{f"removed_by_{r}": counts[r] for r in CAT_RULES}}


def rows_of(dataset) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "image"} for row in dataset]


@pytest.fixture(scope="module")
def filtered():
    return cat_filter(cat_dataset(), caption_parser=PARSER)


@pytest.fixture(scope="module")
def signals():
    return add_cat_signals(cat_dataset(), caption_parser=PARSER)


# ---- the rules -------------------------------------------------------------------------------------------------
def test_each_pair_is_removed_by_its_expected_rule(signals):
    assert signals["cat_removed_by"] == EXPECTED


def test_ocr_runs_only_on_pairs_that_pass_the_caption_rules(signals):
    ran_ocr = [text is not None for text in signals["spotted_text"]]
    passed_captions = [rule not in ("empty_caption", "complexity", "actions", "undecodable_image") for rule in EXPECTED]
    assert ran_ocr == passed_captions


def test_text_repeating_the_caption_is_spotted_with_full_overlap(signals):
    row = EXPECTED.index("text_spotting")
    assert (signals[row]["spotted_text"], signals[row]["text_overlap"]) == ("BIG SALE", 1.0)


def test_text_unrelated_to_the_caption_is_kept_with_zero_overlap(signals):
    row = [caption for caption, _, _ in cat_rows()].index("a man is riding a red bike")
    assert signals[row]["text_overlap"] == 0.0 and signals[row]["cat_removed_by"] is None


def test_kept_rows_are_the_passing_rows_in_their_original_order(filtered):
    kept, _ = filtered
    assert kept["row"] == EXPECTED_KEPT


def test_kept_rows_carry_the_signal_columns(filtered):
    kept, _ = filtered
    assert set(SIGNALS) <= set(kept.column_names) and "cat_removed_by" not in kept.column_names


def test_kept_images_decode_as_pil_with_the_original_feature(filtered):
    kept, _ = filtered
    assert kept.features["image"] == Image() and isinstance(kept[0]["image"], PILImage.Image)


def test_text_spotting_off_keeps_the_text_pair_but_still_counts_undecodable_images():
    kept, report = cat_filter(cat_dataset(), caption_parser=PARSER, text_spotting=False)
    outcomes = [None if rule == "text_spotting" else rule for rule in EXPECTED]
    assert report == expected_report(outcomes)


def test_zero_thresholds_disable_the_caption_rules():
    _, report = cat_filter(cat_dataset(), caption_parser=PARSER, min_complexity=0, min_actions=0,
                           text_spotting=False)
    # rows 0, 3-6 now pass; the last row's "not an image" bytes are now decoded, and fail
    outcomes = [None, "empty_caption", "empty_caption", None, None, None, None,
                "undecodable_image", "undecodable_image", "undecodable_image", "undecodable_image"]
    assert report == expected_report(outcomes)


def test_grayscale_rgba_cmyk_16bit_and_palette_images_are_kept():
    _, report = cat_filter(cat_dataset(image_mode_rows()), caption_parser=PARSER, text_spotting=False)
    assert report == expected_report([None] * len(image_mode_rows()))


def test_max_text_overlap_is_the_largest_share_kept():
    # spotted {open, daily}; the caption has "open": overlap 0.5, kept at 0.5, removed at 0.49
    rows = [("a man is riding a red bike to the open gate", encode(text_image("OPEN DAILY")), None)]
    _, at_half = cat_filter(cat_dataset(rows), caption_parser=PARSER, max_text_overlap=0.5)
    _, below_half = cat_filter(cat_dataset(rows), caption_parser=PARSER, max_text_overlap=0.49)
    assert (at_half["kept"], below_half["removed_by_text_spotting"]) == (1, 1)


# ---- the report ------------------------------------------------------------------------------------------------
def test_report_counts_each_rule_as_worked_out_by_hand(filtered):
    _, report = filtered
    assert report == expected_report(EXPECTED)


def test_report_counts_add_up_to_total(filtered):
    _, report = filtered
    assert report["kept"] + sum(v for k, v in report.items() if k.startswith("removed_by_")) == report["total"]


def test_report_is_json_serialisable(filtered):
    _, report = filtered
    assert json.loads(json.dumps(report)) == report


# ---- invariance --------------------------------------------------------------------------------------------------
def test_num_proc_2_gives_the_same_rows_and_report_as_num_proc_1(filtered):
    kept, report = cat_filter(cat_dataset(), caption_parser=PARSER, num_proc=2)
    assert (rows_of(kept), report) == (rows_of(filtered[0]), filtered[1])


def test_batch_size_does_not_change_the_result(filtered):
    kept, report = cat_filter(cat_dataset(), caption_parser=PARSER, batch_size=4)
    assert (rows_of(kept), report) == (rows_of(filtered[0]), filtered[1])


def test_streaming_gives_the_same_rows_and_report_as_in_memory(filtered):
    stream = cat_dataset().to_iterable_dataset(num_shards=3)
    kept, report = cat_filter(stream, caption_parser=PARSER, batch_size=4)
    assert isinstance(kept, IterableDataset)
    assert (rows_of(kept), report) == (rows_of(filtered[0]), filtered[1])  # report is final after the pass


def test_streaming_report_restarts_on_a_second_pass():
    kept, report = cat_filter(cat_dataset().to_iterable_dataset(), caption_parser=PARSER, text_spotting=False)
    list(kept)
    list(kept)
    assert report["total"] == len(EXPECTED)


def test_streaming_rows_decode_as_pil():
    kept, _ = cat_filter(cat_dataset().to_iterable_dataset(), caption_parser=PARSER, text_spotting=False)
    assert isinstance(next(iter(kept))["image"], PILImage.Image)


def test_raw_bytes_column_is_filtered_like_an_image_column():
    rows = cat_rows()
    raw = Dataset.from_dict({"image": [data for _, data, _ in rows], "caption": [c for c, _, _ in rows]},
                            features=Features({"image": Value("binary"), "caption": Value("string")}))
    _, report = cat_filter(raw, caption_parser=PARSER, text_spotting=False)
    assert report == expected_report([None if rule == "text_spotting" else rule for rule in EXPECTED])


# ---- webdataset shards as img2dataset writes them ---------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two img2dataset-style shards: {key}.jpg, {key}.txt, {key}.json; one truncated download among them."""
    folder = tmp_path_factory.mktemp("shards")
    rows = [(ACTION_CAPTION, encode(scene(1), "JPEG"), None), ("a dog", encode(scene(2), "JPEG"), "complexity"),
            (ACTION_CAPTION, truncated_jpeg(), "undecodable_image")]
    for shard in range(2):
        with webdataset.TarWriter(str(folder / f"{shard:05d}.tar")) as sink:
            for i, (caption, data, _) in enumerate(rows):
                key = f"{shard:05d}{i:04d}"
                sink.write({"__key__": key, "jpg": data, "txt": caption,
                            "json": json.dumps({"key": key, "caption": caption, "status": "success"}).encode()})
    return str(folder / "*.tar"), [rule for _ in range(2) for _, _, rule in rows]


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streaming"])
def test_webdataset_shards_are_filtered_with_jpg_and_txt_columns(shards, streaming, tmp_path):
    pattern, outcomes = shards
    source = load_dataset("webdataset", data_files={"train": pattern}, split="train", streaming=streaming,
                          cache_dir=str(tmp_path))
    kept, report = cat_filter(source, image_column="jpg", caption_column="txt", caption_parser=PARSER,
                              text_spotting=False)
    assert [row["__key__"] for row in kept] == ["000000000", "000010000"]
    assert report == expected_report(outcomes)


# ---- errors ------------------------------------------------------------------------------------------------------
def test_missing_caption_column_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'text'"):
        cat_filter(cat_dataset(), caption_column="text", caption_parser=PARSER)


def test_missing_column_in_a_stream_of_unknown_features_is_an_error_naming_it():
    stream = IterableDataset.from_generator(lambda: iter([{"img": b"", "caption": "a dog"}]))
    kept, _ = cat_filter(stream, caption_parser=PARSER, text_spotting=False)
    with pytest.raises(ValueError, match="'image'"):
        list(kept)


def test_num_proc_on_a_stream_is_refused():
    with pytest.raises(ValueError, match="num_proc"):
        cat_filter(cat_dataset().to_iterable_dataset(), num_proc=2, caption_parser=PARSER)
