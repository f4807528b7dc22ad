"""Specification of CAT, concept labelling and the curation commands on scraped-style input (issue 13, items 1-6):
spacers and banners that OCR cannot take, OCR engines and teachers that fail on one image, images too large for the
teacher's resize, caption columns of lists or numbers, a filter that keeps nothing, shards with a non-UTF-8 caption.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from datasets import Dataset, Features, Image, Value, load_from_disk
from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException
from PIL import Image as PILImage
from rapidocr.utils.process_img import ResizeImgError
from timm.data import create_transform, resolve_data_config
from torch import nn

from curation import CAT_RULES, TextSpotter, cat_filter, label_concepts
from curation.concepts import ConceptLabeller
from curation.text_spotting import (
    TextSpottingError,
    UnreadableImageShapeError,
    ocr_view,
    strip_pieces,
    words,
)
from tests.helpers import (
    ACTION_CAPTION,
    EXTREME_SHAPES,
    banner,
    cat_dataset,
    encode,
    png_of_size,
    run_example,
    scene,
    text_image,
    write_raw_shard,
)


def pairs_with_images(images: list[bytes], caption: str = ACTION_CAPTION) -> Dataset:
    """Pairs that pass the caption rules, so that every image reaches decoding and OCR."""
    return Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images], "caption": [caption] * len(images),
                              "row": list(range(len(images)))},
                             features=Features({"image": Image(), "caption": Value("string"), "row": Value("int64")}))


def expected_report(outcomes) -> dict:
    counts = {rule: sum(o == rule for o in outcomes) for rule in CAT_RULES}
    return {"total": len(outcomes), "kept": sum(o is None for o in outcomes),
            **{f"removed_by_{rule}": counts[rule] for rule in CAT_RULES}}


def filtered(dataset, **kwargs) -> tuple[dict, Dataset]:
    """`(report, kept)` of CAT with the offline caption parser."""
    kept, report = cat_filter(dataset, caption_parser="textblob", **kwargs)
    return report, kept


# ---- item 1: no image that decodes stops a CAT run --------------------------------------------------------------

@pytest.fixture(scope="module")
def spotter() -> TextSpotter:
    return TextSpotter(device="cpu")


@pytest.mark.parametrize("width, height", EXTREME_SHAPES)
def test_rapidocr_is_not_run_on_images_too_thin_to_hold_text(spotter, width, height):
    with pytest.raises(UnreadableImageShapeError, match=f"{width}x{height}"):
        spotter.spot(PILImage.new("RGB", (width, height), "white"))


def test_cat_counts_spacers_under_their_own_rule_with_real_ocr_and_goes_on(spotter):
    images = [png_of_size(w, h) for w, h in EXTREME_SHAPES] + [encode(scene(0)), encode(text_image("BIG SALE"))]
    data = pairs_with_images(images, caption="a woman holds a big sign for the sale")
    report, kept = filtered(data, text_spotter=spotter)
    outcomes = ["unreadable_image_shape"] * len(EXTREME_SHAPES) + [None, "text_spotting"]
    assert report == expected_report(outcomes) and kept["row"] == [len(EXTREME_SHAPES)]


class FailingEngine:
    """An OCR engine that raises `error` on images of width `fail_width` and reads "OPEN DAILY" elsewhere."""

    def __init__(self, error: BaseException, fail_width: int):
        self.error, self.fail_width, self.seen = error, fail_width, []

    def __call__(self, image):
        self.seen.append(image.size)
        if image.width == self.fail_width:
            raise self.error
        return SimpleNamespace(txts=("OPEN DAILY",))


ENGINE_ERRORS = [ResizeImgError(), MemoryError(), RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION"),
                 RuntimeError("CUDA error: out of memory"), ValueError("cannot reshape array")]


@pytest.mark.parametrize("error", ENGINE_ERRORS, ids=lambda e: type(e).__name__)
def test_an_engine_that_fails_on_one_image_is_counted_and_the_run_goes_on(error):
    images = [encode(scene(i, size=size)) for i, size in enumerate((64, 37, 64, 37))]
    engine = FailingEngine(error, fail_width=37)
    report, kept = filtered(pairs_with_images(images), text_spotter=TextSpotter(engine=engine))
    assert report == expected_report([None, "text_spotting_failed", None, "text_spotting_failed"])
    assert kept["row"] == [0, 2] and kept["spotted_text"] == ["OPEN DAILY", "OPEN DAILY"]


def test_the_spotting_error_names_the_image_and_the_engines_error():
    with pytest.raises(TextSpottingError, match="37x37 .*MemoryError"):
        TextSpotter(engine=FailingEngine(MemoryError("out of memory"), 37)).spot(scene(0, size=37))


def test_an_injected_engine_travels_to_num_proc_workers():
    images = [encode(scene(i, size=size)) for i, size in enumerate((64, 37) * 3)]
    spotter = TextSpotter(engine=FailingEngine(ResizeImgError(), 37))
    report, _ = filtered(pairs_with_images(images), text_spotter=spotter, num_proc=2, batch_size=2)
    assert report == expected_report([None, "text_spotting_failed"] * 3)


# -- long strips: read as a mosaic of their pieces

@pytest.mark.parametrize("width, height", [(4000, 8), (8, 4000), (2560, 40), (40, 2560), (100000, 9), (81, 10)])
def test_the_engine_sees_a_near_square_mosaic_of_every_pixel_of_a_long_strip(width, height):
    # Each column (or row, for a tall strip) carries its own position in two channels, so the mosaic can be checked
    # for coverage independently of how it is built.
    along = np.arange(max(width, height))
    code = np.stack([along % 251, along // 251 % 251, np.full_like(along, 7)], axis=-1).astype(np.uint8)  # (L, 3)
    pixels = np.broadcast_to(code[None, :, :], (height, width, 3)) if width >= height else \
        np.broadcast_to(code[:, None, :], (height, width, 3))
    engine = FailingEngine(RuntimeError(), fail_width=-1)
    TextSpotter(engine=engine).spot(PILImage.fromarray(np.ascontiguousarray(pixels)))
    (seen,) = engine.seen
    assert max(seen) <= 8 * min(seen)  # within rapidocr's own 8:1, so it neither pads nor blows the strip up
    assert seen[0] * seen[1] <= 3 * width * height + 4 * max(seen)  # about the source's pixels
    mosaic = np.asarray(ocr_view(PILImage.fromarray(np.ascontiguousarray(pixels)))).reshape(-1, 3)
    present = {(int(r), int(g)) for r, g, b in mosaic if b == 7}
    assert present == {(int(r), int(g)) for r, g, _ in code}  # every position of the strip is in the mosaic


def test_strip_pieces_cover_the_strip_and_overlap_by_four_short_sides():
    assert strip_pieces(100, 5, 2) == [(0, 60), (40, 100)]  # cuts at 50, each widened by 2 x 5 on both sides
    pieces = strip_pieces(2560, 40, 8)  # cuts every 320
    assert pieces[0][0] == 0 and pieces[-1][1] == 2560
    assert all(left[1] - right[0] == 160 for left, right in zip(pieces, pieces[1:]))


def test_an_image_within_eight_to_one_is_read_as_it_is():
    image = PILImage.new("RGB", (320, 40))
    assert ocr_view(image) is image


@pytest.mark.parametrize("width, height, text, expected", [
    (2560, 40, "BIG SALE TODAY", {"big", "sale", "today"}),  # rapidocr alone reads nothing at this width
    (2560, 20, "BIG SALE TODAY", {"big", "sale", "today"}),  # rapidocr alone raises ResizeImgError
    (3000, 30, "OPEN DAILY" + " " * 90 + "FRESH BREAD", {"open", "daily", "fresh", "bread"}),  # text at both ends
])
def test_text_on_long_banners_is_spotted_by_rapidocr(spotter, width, height, text, expected):
    assert expected <= words(spotter.spot(banner(width, height, text)))


def test_a_banner_with_its_caption_written_on_it_is_removed_by_the_text_rule(spotter):
    data = pairs_with_images([encode(banner(2560, 40, "BIG SALE TODAY"))],
                             caption="a woman holds a big sign for the sale today")
    report, _ = filtered(data, text_spotter=spotter)
    assert report == expected_report(["text_spotting"])


# ---- item 1 and 2: concept labelling skips what it cannot label, by reason ----------------------------------------

@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False).eval()


def image_cells(cells: list[bytes]) -> Dataset:
    images = [{"bytes": c, "path": None} for c in cells]
    return Dataset.from_dict({"image": images}, features=Features({"image": Image()}))


def direct_top_ids(teacher, images, k=3) -> list[list[int]]:
    transform = create_transform(**resolve_data_config({}, model=teacher))
    with torch.no_grad():
        return [teacher(transform(image.convert("RGB"))[None]).softmax(-1)[0].topk(k).indices.tolist()
                for image in images]


def test_images_too_large_for_the_teachers_resize_are_skipped_and_counted(teacher):
    # test_vit resizes the short side to 168: 1x600000 -> 168x100,800,000 pixels, over the default limit.
    cells = [png_of_size(600000, 1), encode(scene(0)), png_of_size(1, 600000), encode(scene(1))]
    data = image_cells(cells)
    labelled, report = label_concepts(data, teacher, top_k=3, return_report=True)
    assert report == {"total": 4, "labelled": 2, "undecodable_image": 0, "image_too_large": 2}
    first, second = direct_top_ids(teacher, [scene(0), scene(1)])
    assert labelled["concept_ids"] == [[], first, [], second]
    assert "_concept_skipped_because" not in labelled.column_names


def test_a_custom_resized_limit_applies_to_the_teacher(teacher):
    cells = [png_of_size(w, h) for w, h in [(4000, 1), (3000, 2), (200, 200)]]  # 168x672000, 252000x168, 168x168
    data = image_cells(cells)
    _, report = label_concepts(data, teacher, top_k=3, return_report=True, max_resized_pixels=168 * 168 * 10)
    assert report == {"total": 3, "labelled": 1, "undecodable_image": 0, "image_too_large": 2}


class FlakyTeacher(nn.Module):
    """A classifier that fails on any batch holding an image whose mean pixel is above `limit` (a white image)."""

    def __init__(self, base: nn.Module, limit: float = 0.9):
        super().__init__()
        self.base, self.limit = base, limit
        self.pretrained_cfg = base.pretrained_cfg
        self.num_classes = base.num_classes

    def forward(self, pixels):
        if (pixels.mean(dim=(1, 2, 3)) > self.limit).any():
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.base(pixels)


def test_a_teacher_that_fails_on_one_image_skips_that_image_only(teacher):
    images = [scene(0), PILImage.new("RGB", (224, 224), "white"), scene(1), scene(2)]
    data = Dataset.from_dict({"image": [{"bytes": encode(i), "path": None} for i in images]},
                             features=Features({"image": Image()}))
    for stream in (False, True):
        source = data.to_iterable_dataset() if stream else data
        labelled, report = label_concepts(source, FlakyTeacher(teacher), top_k=3, batch_size=4, return_report=True)
        ids = [row["concept_ids"] for row in labelled]
        assert report == {"total": 4, "labelled": 3, "undecodable_image": 0, "teacher_failed": 1}
        expected = direct_top_ids(teacher, [images[0], images[2], images[3]])
        assert ids == [expected[0], [], expected[1], expected[2]]


def test_a_transform_that_fails_on_one_image_skips_that_image_only(teacher):
    base = create_transform(**resolve_data_config({}, model=teacher))

    def transform(image):
        if image.width == 37:
            raise ValueError("cannot normalise")
        return base(image)

    labeller = ConceptLabeller(teacher, transform, image_column="image", top_k=3, return_scores=False, device="cpu",
                               activation="softmax", max_image_pixels=None)
    cells = [encode(scene(0)), encode(scene(1, size=37)), b"broken"]
    out = labeller({"image": cells})
    assert out["_concept_skipped_because"] == [None, "transform_failed", "undecodable_image"]
    assert out["concept_ids"] == [direct_top_ids(teacher, [scene(0)])[0], [], []]


# ---- item 4: caption columns of lists or numbers in CAT -----------------------------------------------------------

def coco_pairs() -> Dataset:
    captions = [[ACTION_CAPTION, "a dog"], [], ["a woman holds a big sign for the sale", ACTION_CAPTION, ""]]
    images = [encode(scene(0)), encode(scene(1)), encode(text_image("BIG SALE"))]
    return Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images], "captions": captions})


class NoOCR:
    def __call__(self, image):
        raise AssertionError("OCR ran before the caption column was checked")


def test_cat_judges_every_caption_of_a_coco_style_column():
    report, kept = filtered(coco_pairs(), caption_column="captions", text_spotter=TextSpotter(device="cpu"))
    # by hand: image 0 -> kept, complexity; image 1 (no caption) -> empty; image 2 -> text rule, kept, empty
    assert report == expected_report([None, "complexity", "empty_caption", "text_spotting", None, "empty_caption"])
    assert kept["image_id"] == [0, 2] and kept["captions"] == [ACTION_CAPTION, ACTION_CAPTION]


def test_cat_picks_the_first_caption_when_asked():
    report, kept = filtered(coco_pairs(), caption_column="captions", caption_list="first", text_spotting=False)
    assert report == expected_report([None, "empty_caption", None])
    assert kept["captions"] == [ACTION_CAPTION, "a woman holds a big sign for the sale"]


@pytest.mark.parametrize("values, named", [([1, 2, 3], "int64"), ([[1], [2], [3]], "List of int64"),
                                           ([{"en": "a"}] * 3, "dict")])
def test_cat_names_a_caption_column_of_another_type_before_any_work(values, named):
    data = coco_pairs().remove_columns("captions").add_column("caption", values)
    for source in (data, data.to_iterable_dataset()):
        with pytest.raises(TypeError, match=f"caption column 'caption' holds {named}"):
            cat_filter(source, text_spotter=TextSpotter(engine=NoOCR()), caption_parser="textblob")


# ---- the commands: items 4, 5 and 6 end to end ------------------------------------------------------------------

def command(name: str, argv: list[str], output_dir) -> dict:
    run_example(name, [*argv, "--output_dir", str(output_dir)])
    return json.loads((output_dir / "report.json").read_text())


@pytest.mark.parametrize("extra", [[], ["--streaming"], ["--streaming", "--format", "webdataset"]])
def test_filter_command_refuses_to_write_nothing_and_says_which_rules_removed_what(tmp_path, extra):
    cat_dataset().select([0, 1, 2, 10]).save_to_disk(str(tmp_path / "source"))  # complexity, empty x2, complexity
    with pytest.raises(SystemExit) as stop:
        command("filter_cat", ["--dataset_path", str(tmp_path / "source"), "--parser", "textblob",
                               "--text_spotting", "false", *extra], tmp_path / "out")
    assert "CAT kept none of the 4 pairs (empty_caption 2, complexity 2)" in str(stop.value.code)
    result = json.loads((tmp_path / "out" / "report.json").read_text())
    assert result["output"] is None and result["report"]["total"] == 4
    assert (tmp_path / "out" / "removed_samples.png").is_file()
    assert not any((tmp_path / "out" / name).exists() for name in ("data", "data.parquet", "shards"))


def test_the_next_step_says_why_the_dataset_is_empty(tmp_path):
    out = tmp_path / "cat"
    Dataset.from_dict({"image": [], "caption": []}, features=Features({"image": Image(), "caption": Value("string")})
                      ).save_to_disk(str(out / "data"))  # an empty folder, as older versions of filter_cat wrote
    report = {"total": 4, "kept": 0, "removed_by_empty_caption": 2, "removed_by_complexity": 2}
    (out / "report.json").write_text(json.dumps({"report": report}))
    for name, argv in (("label_concepts", ["--teacher", "test_vit", "--no_pretrained"]),
                       ("pretrain", ["--cat_filter", "false", "--concept_distillation", "false"])):
        with pytest.raises(SystemExit) as stop:
            run_example(name, ["--dataset_path", str(out / "data"), *argv, "--output_dir", str(tmp_path / name)])
        message = str(stop.value.code)
        assert f"the dataset at {out / 'data'} has no rows" in message
        assert "CAT removed all 4 pairs" in message and "empty_caption 2, complexity 2" in message


def test_filter_command_explodes_coco_captions_or_takes_the_first(tmp_path):
    coco_pairs().save_to_disk(str(tmp_path / "coco"))
    common = ["--dataset_path", str(tmp_path / "coco"), "--caption_column", "captions", "--parser", "textblob",
              "--text_spotting", "false"]
    result = command("filter_cat", common, tmp_path / "explode")
    assert result["report"]["total"] == 6 and result["report"]["kept"] == 3  # every caption is a pair
    kept = load_from_disk(result["output"])
    assert kept["image_id"] == [0, 2, 2]
    first = command("filter_cat", [*common, "--caption_list", "first"], tmp_path / "first")
    assert first["report"]["total"] == 3
    assert load_from_disk(first["output"])["captions"] == [ACTION_CAPTION, "a woman holds a big sign for the sale"]


@pytest.mark.parametrize("streaming", [False, True])
def test_filter_command_reads_a_shard_with_a_non_utf8_caption(tmp_path, streaming):
    (tmp_path / "shards").mkdir()
    samples = [{"__key__": f"{i:05d}", "jpg": encode(scene(i, 32), "JPEG"), "txt": ACTION_CAPTION.encode()}
               for i in range(5)]
    samples[3]["txt"] = "a brown dog runs on the green grass in the café".encode("latin-1")
    write_raw_shard(tmp_path / "shards" / "00000.tar", samples)
    result = command("filter_cat", ["--dataset_name", str(tmp_path / "shards"), "--parser", "textblob",
                                    "--text_spotting", "false", *(["--streaming"] if streaming else [])],
                     tmp_path / "out")
    assert result["report"]["total"] == 5 and result["report"]["kept"] == 5  # the repaired caption is judged
    kept = load_from_disk(result["output"])
    assert kept["txt"][3] == "a brown dog runs on the green grass in the caf\ufffd"
