"""End-to-end specification of the curation commands: `examples/filter_cat.py` then `examples/label_concepts.py`
on a saved dataset and on webdataset shards, offline (textblob parser, random-init timm teacher)."""

import json

import pytest
from datasets import load_dataset, load_from_disk
from PIL import Image as PILImage

from curation import concept_vocabulary
from tests.helpers import cat_dataset, cat_rows, run_example


def command(name: str, argv: list[str], output_dir) -> dict:
    """Run `examples/<name>.py` and return the `report.json` it writes."""
    run_example(name, [*argv, "--output_dir", str(output_dir)])
    return json.loads((output_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def filtered(tmp_path_factory):
    """filter_cat.py on a saved dataset, without OCR (the text rule is specified in test_curation_cat_filter.py)."""
    folder = tmp_path_factory.mktemp("cat")
    cat_dataset().save_to_disk(str(folder / "source"))
    result = command("filter_cat", ["--dataset_path", str(folder / "source"), "--parser", "textblob",
                                    "--text_spotting", "false", "--samples_per_rule", "2"], folder / "out")
    return folder / "out", result


def test_filter_command_writes_the_kept_pairs_as_a_saved_dataset(filtered):
    out, _ = filtered
    kept = load_from_disk(str(out / "data"))
    expected = [i for i, (_, _, rule) in enumerate(cat_rows()) if rule in (None, "text_spotting")]
    assert kept["row"] == expected and isinstance(kept[0]["image"], PILImage.Image)


def test_filter_command_saves_the_report_as_json(filtered):
    _, result = filtered
    report = result["report"]
    removed = [rule for _, _, rule in cat_rows() if rule not in (None, "text_spotting")]
    assert report["total"] == len(cat_rows()) and report["kept"] == len(cat_rows()) - len(removed)
    assert report["removed_by_undecodable_image"] == removed.count("undecodable_image")


def test_filter_command_draws_sample_pairs_per_rule(filtered):
    out, _ = filtered
    with PILImage.open(out / "removed_samples.png") as grid:
        # 5 rows (empty caption, complexity, actions, undecodable image, kept) x 2 samples, 2.6 x 3.2 in at 110 dpi
        assert grid.size == (round(2 * 2.6 * 110), round(5 * 3.2 * 110))


def test_filter_then_label_on_streamed_shards(filtered, tmp_path):
    out, _ = filtered
    command("filter_cat", ["--dataset_path", str(out / "data"), "--streaming", "--format", "webdataset",
                           "--parser", "textblob", "--text_spotting", "false"], tmp_path / "shards_out")
    # The shards' jpg/txt columns are found by themselves.
    result = command("label_concepts", ["--dataset_name", str(tmp_path / "shards_out" / "shards"), "--teacher",
                                        "test_vit", "--no_pretrained", "--top_k", "2"], tmp_path / "labelled")
    labelled = load_from_disk(result["output"])
    assert len(labelled) == result["report"]["labelled"] == len(load_from_disk(str(out / "data")))
    assert all(len(ids) == 2 for ids in labelled["concept_ids"])


def test_label_command_saves_the_vocabulary_next_to_the_data(filtered, tmp_path):
    out, _ = filtered
    result = command("label_concepts", ["--dataset_path", str(out / "data"), "--teacher", "test_vit",
                                        "--no_pretrained", "--format", "parquet"], tmp_path)
    labelled = load_dataset("parquet", data_files=result["output"], split="train", cache_dir=str(tmp_path / "c"))
    assert json.loads((tmp_path / "vocabulary.json").read_text()) == concept_vocabulary(labelled)
