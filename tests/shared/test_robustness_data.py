"""Specification of the data layer and the training collator on scraped-style input (issue 13, items 2-6): images a
resize would blow up, PIL's own bomb limit, broken rows at the start of a stream, caption columns of the wrong type,
empty datasets, and webdataset shards with an undecodable member."""

import json
import logging
import tempfile

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, IterableDataset, List, Sequence, Value
from PIL import Image as PILImage
from transformers import CLIPImageProcessor, HfArgumentParser
from transformers.image_transforms import get_resize_output_image_size

from evaluation.encoding import ImageBatchCollator, encode_images
from image_text_data import (
    DataSourceArguments,
    EmptyDatasetError,
    ImageTooLargeError,
    UndecodableImageError,
    apply_caption_policy,
    check_caption_column,
    explode_captions,
    load_image,
    load_source,
    resized_size,
    save_dataset,
    select_captions,
)
from tests.helpers import (
    arguments,
    collator_for,
    encode,
    image_processor,
    png_of_size,
    scene,
    scene_pairs,
    tiny_model,
    tokenizer_for,
    write_raw_shard,
)
from trainers import DiHTTrainer, ImageTextCollator

# ---- item 2: the pixel guard counts what the resize allocates ---------------------------------------------------


@pytest.mark.parametrize("width, height, shortest, longest", [
    (60000, 1, 224, None), (1, 60000, 224, None), (300, 200, 224, None), (200, 300, 30, None), (7, 7, 30, None),
    (1000, 100, 224, 500), (100, 1000, 224, 500), (3000, 2, 32, None)])
def test_resized_size_is_the_size_transformers_resizes_to(width, height, shortest, longest):
    image = torch.zeros(3, height, width)  # channels first, as transformers reads it
    new_height, new_width = get_resize_output_image_size(image, shortest, default_to_square=False, max_size=longest)
    assert resized_size(width, height, shortest, longest) == (new_width, new_height)


def test_resized_size_by_hand():
    assert resized_size(60000, 1, 224) == (224 * 60000, 224)  # 3,010,560,000 pixels from a 60,000-pixel spacer
    assert resized_size(1000, 100, 224, longest_edge=500) == (500, 50)  # 2240 capped at 500: 224 * 500 / 2240 = 50


@pytest.mark.parametrize("width, height", [(60000, 1), (1, 60000), (5000, 2), (2, 5000)])
def test_an_image_whose_resize_exceeds_the_default_limit_is_refused_before_decoding(width, height):
    data = png_of_size(width, height)
    header_only = data[:64]  # the size is in the header: refusing needs no pixel, a truncated file proves it
    for cell in (data, header_only):
        with pytest.raises(ImageTooLargeError, match="would be resized to"):
            load_image(cell, shortest_edge=224)
    assert load_image(data).size == (width, height)  # without a resize to check, the image itself is fine


def test_an_image_under_the_resized_limit_decodes_and_a_custom_limit_applies():
    data = png_of_size(3000, 2)  # resized to 336000x224 = 75.3 M pixels: under the default 89.5 M
    assert load_image(data, shortest_edge=224).size == (3000, 2)
    with pytest.raises(ImageTooLargeError):
        load_image(data, shortest_edge=224, max_resized_pixels=336000 * 224 - 1)
    assert load_image(data, shortest_edge=224, max_resized_pixels=336000 * 224).size == (3000, 2)
    assert issubclass(ImageTooLargeError, UndecodableImageError)  # callers that count skips still count it


@pytest.fixture(scope="module")
def hundred_megapixels() -> bytes:
    """A 10000x10000 PNG of one colour: 100 M pixels, above PIL's 89.5 M bomb threshold, 30 kB on disk."""
    return png_of_size(10000, 10000, value=1, mode="1")


def test_max_pixels_none_decodes_what_pils_own_limit_would_refuse(hundred_megapixels):
    limit = PILImage.MAX_IMAGE_PIXELS
    with pytest.raises(UndecodableImageError):
        load_image(hundred_megapixels)  # the default limit
    image = load_image(hundred_megapixels, max_pixels=None)
    assert image.size == (10000, 10000) and image.getextrema() == ((255, 255),) * 3
    assert PILImage.MAX_IMAGE_PIXELS == limit  # PIL's global is put back


def test_a_limit_above_pils_replaces_it(hundred_megapixels):
    assert load_image(hundred_megapixels, max_pixels=100_000_000).size == (10000, 10000)
    with pytest.raises(UndecodableImageError, match="99999999"):
        load_image(hundred_megapixels, max_pixels=99_999_999)


def test_max_pixels_none_decodes_beyond_twice_pils_limit_where_pil_raises_an_error():
    data = png_of_size(13500, 13500, value=1, mode="1")  # 182 M pixels: PIL's DecompressionBombError territory
    with pytest.raises(PILImage.DecompressionBombError):
        PILImage.open(__import__("io").BytesIO(data))
    assert load_image(data, max_pixels=None).size == (13500, 13500)


def clip_processor(size: int) -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def test_the_collator_skips_and_counts_images_its_processor_would_blow_up():
    pairs = scene_pairs(4).to_list()
    shapes = [(1, 4000), (3000, 2), (4000, 1)]  # at 30 px: 30x120000, 45000x30, 120000x30
    spacers = [{**pairs[0], "image": {"bytes": png_of_size(w, h), "path": None}} for w, h in shapes]
    collator = ImageTextCollator(tokenizer_for(scene_pairs(4)), image_processor(), max_resized_pixels=30 * 30 * 50)
    batch = collator(pairs + spacers)
    assert batch["skipped_large_images"] == 3 and batch["skipped_images"] == 0
    assert batch["pixel_values"].shape[0] == 4


def test_the_collator_guard_holds_at_the_default_limit_for_a_224_px_processor():
    pairs = scene_pairs(3).to_list()
    # Without the guard the processor would allocate 13,440,000 x 224 x 3 floats (36 GB) for the first row.
    pairs[0]["image"] = {"bytes": png_of_size(60000, 1), "path": None}
    collator = ImageTextCollator(tokenizer_for(scene_pairs(3)), clip_processor(224))
    batch = collator(pairs)
    assert batch["skipped_large_images"] == 1 and batch["pixel_values"].shape == (2, 3, 224, 224)


def test_the_collator_checks_the_output_of_a_training_transform():
    pairs = scene_pairs(3).to_list()
    stretch = lambda image: image.resize((4000, 1))  # noqa: E731 - a transform that makes a strip of any image
    collator = ImageTextCollator(tokenizer_for(scene_pairs(3)), image_processor(), train_transform=stretch,
                                 max_resized_pixels=30 * 30 * 50)
    batch = collator(pairs)  # every image becomes a strip: nothing usable, so a stand-in (item 3)
    assert (batch["skipped_large_images"], batch["skipped_batches"]) == (3, 1)


def test_evaluation_skips_and_counts_images_too_large_for_the_resize():
    good = [(i, {"image": {"bytes": encode(scene(i, 32)), "path": None}}) for i in range(2)]
    strips = [(2 + i, {"image": {"bytes": png_of_size(w, h), "path": None}}) for i, (w, h) in
              enumerate([(60000, 1), (1, 60000)])]
    broken = [(4, {"image": {"bytes": b"not an image", "path": None}})]
    collator = ImageBatchCollator(clip_processor(224))
    batch = collator(good + strips + broken)
    assert batch["index"].tolist() == [0, 1] and (batch["skipped"], batch["skipped_large"]) == (3, 2)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def get_image_features(self, pixel_values):
            return pixel_values.flatten(1)[:, :4] * self.weight

    embeddings, extras = encode_images(Encoder(), [batch, collator(strips)])
    assert embeddings.shape == (2, 4) and (extras["skipped"], extras["skipped_large"]) == (5, 4)


def test_evaluation_checks_the_size_of_a_custom_decoder_too():
    collator = ImageBatchCollator(clip_processor(224), decode=lambda cell: PILImage.new("RGB", (1, 60000)))
    batch = collator([(0, {"image": b"anything"})])
    assert (batch["skipped"], batch["skipped_large"]) == (1, 1) and batch["pixel_values"] is None


# ---- item 3: broken rows at the start of a stream -------------------------------------------------------------


def broken_rows(rows: list[dict]) -> list[dict]:
    """The kinds of broken rows a dead domain leaves: undecodable images, HTML pages, empty and missing captions."""
    kinds = [{"image": {"bytes": b"", "path": None}}, {"image": {"bytes": b"<html>502</html>", "path": None}},
             {"caption": ""}, {"caption": None}]
    return [{**row, **kinds[i % len(kinds)]} for i, row in enumerate(rows)]


@pytest.mark.parametrize("usable", [0, 1])
def test_a_short_batch_with_nothing_to_top_up_becomes_a_stand_in_batch(usable):
    rows = scene_pairs(4).to_list()
    batch_rows = rows[:usable] + broken_rows(rows[usable:])
    collator = collator_for(tokenizer_for(scene_pairs(4)))
    batch = collator(batch_rows)
    broken = 4 - usable
    assert batch["skipped_batches"] == 1 and batch["reused_pairs"] == 0
    assert batch["skipped_images"] + batch["skipped_captions"] == broken
    assert batch["pixel_values"].shape == (2, 3, 30, 30) and batch["concept_targets"].shape[0] == 2
    # a good batch afterwards is an ordinary one, and the next short batch is topped up from it
    assert collator(rows)["skipped_batches"] == 0
    topped = collator(broken_rows(rows[:2]) + rows[2:3])
    assert (topped["skipped_batches"], topped["reused_pairs"]) == (0, 1)


def test_a_stand_in_batch_trains_with_zero_gradient_for_every_parameter(tmp_path):
    rows = scene_pairs(4).to_list()
    tokenizer = tokenizer_for(scene_pairs(4))
    model = tiny_model(tokenizer)
    trainer = DiHTTrainer(model=model, args=arguments(tmp_path), train_dataset=scene_pairs(4),
                          data_collator=collator_for(tokenizer))
    batch = collator_for(tokenizer)(broken_rows(rows))
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert loss.item() == 0.0 and all(g is not None for g in grads)
    assert all(torch.count_nonzero(g) == 0 for g in grads)
    assert trainer.stand_in_batch


def stream_of(rows: list[dict], features) -> IterableDataset:
    return Dataset.from_list(rows, features=features).to_iterable_dataset()


def test_a_stream_whose_first_two_batches_are_broken_trains_to_the_weights_of_the_clean_stream():
    data = scene_pairs(16)
    rows = data.to_list()
    features = Features({**data.features, "concept_ids": Sequence(Value("int64"))})
    tokenizer = tokenizer_for(data)

    def run(stream_rows, steps):
        trainer = DiHTTrainer(model=tiny_model(tokenizer), args=arguments(tempfile.mkdtemp(), max_steps=steps),
                              train_dataset=stream_of(stream_rows, features), data_collator=collator_for(tokenizer))
        trainer.train()
        return trainer

    # Two batches of 4 broken rows, then the clean stream: plain SGD, no weight decay, constant rate, so a zero
    # gradient step changes nothing and 2 + 4 steps end where 4 clean steps end.
    dirty, clean = run(broken_rows(rows[:8]) + rows, 6), run(rows, 4)
    assert dirty.skipped_counts == {"skipped_images": 4, "skipped_captions": 4, "reused_pairs": 0,
                                    "skipped_batches": 2}
    steps = [entry for entry in dirty.state.log_history if "loss" in entry]
    assert [entry["skipped_batches"] for entry in steps] == [1, 1, 0, 0, 0, 0]
    assert [entry["loss"] for entry in steps[:2]] == [0.0, 0.0] and "contrastive_loss" not in steps[0]
    for (name, a), (_, b) in zip(dirty.model.named_parameters(), clean.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_without_top_up_a_short_batch_is_still_an_error():
    rows = scene_pairs(2).to_list()
    collator = ImageTextCollator(tokenizer_for(scene_pairs(2)), image_processor(), top_up=False)
    with pytest.raises(ValueError, match="only 0 decodable pairs in a batch of 2"):
        collator(broken_rows(rows))


# ---- item 4: captions of the wrong type are named -------------------------------------------------------------


@pytest.mark.parametrize("values, feature, named", [
    ([1, 2], Value("int64"), "int64"), ([0.5, 1.5], Value("float32"), "float32"),
    ([{"en": "a dog"}, {"en": "a cat"}], {"en": Value("string")}, "dict"), ([[1, 2], [3]], List(Value("int32")),
                                                                          "List of int32"),
    ([0, 1], ClassLabel(names=["dog", "cat"]), "ClassLabel")])
def test_a_caption_column_of_another_type_is_an_error_naming_column_and_type(values, feature, named):
    data = Dataset.from_dict({"label": values}, features=Features({"label": feature}))
    for dataset in (data, data.to_iterable_dataset()):
        with pytest.raises(TypeError, match=f"caption column 'label' holds {named}"):
            check_caption_column(dataset, "label")


def test_a_stream_without_features_is_checked_on_its_first_captions():
    def rows():
        yield {"caption": None}
        yield {"caption": 7}

    with pytest.raises(TypeError, match="caption column 'caption' holds int values"):
        check_caption_column(IterableDataset.from_generator(rows), "caption")
    lists = IterableDataset.from_generator(lambda: iter([{"caption": ["a dog", "a red dog"]}]))
    assert check_caption_column(lists, "caption") == "list"


def test_text_and_list_columns_are_told_apart():
    data = Dataset.from_dict({"caption": ["a dog"], "captions": [["a dog", "a brown dog"]]})
    assert check_caption_column(data, "caption") == "text" and check_caption_column(data, "captions") == "list"
    assert apply_caption_policy(data, "caption") is data  # text needs nothing


COCO = {"image": ["i0", "i1", "i2"], "captions": [["a dog runs", "a brown dog"], [], ["a cat", "a cat sits", "x"]],
        "row": [10, 11, 12]}


@pytest.mark.parametrize("stream", [False, True])
def test_explode_gives_one_pair_per_caption_with_the_images_id(stream):
    data = Dataset.from_dict(COCO)
    pairs = explode_captions(data.to_iterable_dataset() if stream else data, "captions")
    rows = list(pairs)
    # by hand: 2 + 1 (an empty list stays one pair, without caption, to be counted) + 3
    assert [r["captions"] for r in rows] == ["a dog runs", "a brown dog", None, "a cat", "a cat sits", "x"]
    assert [r["image_id"] for r in rows] == [0, 0, 1, 2, 2, 2]
    assert [r["image"] for r in rows] == ["i0", "i0", "i1", "i2", "i2", "i2"]
    assert [r["row"] for r in rows] == [10, 10, 11, 12, 12, 12]
    assert pairs.features["captions"] == Value("string")


def test_explode_keeps_an_existing_image_id_and_is_the_same_with_num_proc():
    data = Dataset.from_dict({**COCO, "image_id": [7, 8, 9]})
    assert explode_captions(data, "captions")["image_id"] == [7, 7, 8, 9, 9, 9]
    plain = Dataset.from_dict(COCO)
    assert explode_captions(plain, "captions", num_proc=2).to_list() == explode_captions(plain, "captions").to_list()


def test_first_and_random_pick_one_caption_per_image():
    data = Dataset.from_dict(COCO)
    assert select_captions(data, "captions", "first")["captions"] == ["a dog runs", None, "a cat"]
    many = Dataset.from_dict({"captions": [[f"caption {i} {j}" for j in range(5)] for i in range(40)]})
    picks = select_captions(many, "captions", "random", seed=0)["captions"]
    assert all(pick in options for pick, options in zip(picks, many["captions"]))
    assert len({pick.split()[-1] for pick in picks}) > 1  # not always the same position
    assert list(r["captions"] for r in select_captions(many.to_iterable_dataset(num_shards=2), "captions", "random",
                                                        seed=0)) == picks  # same draws when streamed
    assert select_captions(many, "captions", "random", seed=0, num_proc=2)["captions"] == picks
    assert select_captions(many, "captions", "random", seed=1)["captions"] != picks


def test_the_error_policy_refuses_lists_and_names_the_options():
    with pytest.raises(ValueError, match="explode|first|random"):
        apply_caption_policy(Dataset.from_dict(COCO), "captions", "error")


def test_the_collator_makes_pairs_of_list_captions_and_refuses_numbers():
    rows = scene_pairs(2).to_list()
    rows[0]["caption"], rows[1]["caption"] = ["a red square", "a square on grey"], ["a blue circle"]
    tokenizer = tokenizer_for(scene_pairs(2))
    exploded = ImageTextCollator(tokenizer, image_processor())(rows)
    assert exploded["pixel_values"].shape[0] == 3
    torch.testing.assert_close(exploded["pixel_values"][0], exploded["pixel_values"][1])  # one image, two captions
    first = ImageTextCollator(tokenizer, image_processor(), caption_list="first")(rows)
    assert first["pixel_values"].shape[0] == 2
    rows[0]["caption"] = 3
    with pytest.raises(TypeError, match="caption column 'caption' holds int"):
        ImageTextCollator(tokenizer, image_processor())(rows)


def test_the_data_arguments_take_the_caption_list_option():
    parser = HfArgumentParser(DataSourceArguments)
    assert parser.parse_args_into_dataclasses(args=[])[0].caption_list == "explode"
    assert parser.parse_args_into_dataclasses(args=["--caption_list", "first"])[0].caption_list == "first"
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(args=["--caption_list", "all"])


# ---- item 5: an empty dataset is refused with the reason ------------------------------------------------------


@pytest.mark.parametrize("format", ["saved", "parquet", "webdataset"])
@pytest.mark.parametrize("stream", [False, True])
def test_saving_an_empty_dataset_is_refused_and_leaves_nothing(tmp_path, format, stream):
    empty = Dataset.from_dict({"image": [], "caption": []}, features=Features({"image": Image(),
                                                                               "caption": Value("string")}))
    if stream:
        empty = Dataset.from_dict({"image": [None], "caption": ["x"]}, features=empty.features
                                  ).to_iterable_dataset().filter(lambda row: False)
    with pytest.raises(EmptyDatasetError, match="no rows"):
        save_dataset(empty, str(tmp_path), format=format, image_column="image", caption_column="caption")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_loading_an_empty_saved_dataset_says_it_has_no_rows(tmp_path):
    Dataset.from_dict({"caption": []}, features=Features({"caption": Value("string")})).save_to_disk(
        str(tmp_path / "data"))
    with pytest.raises(EmptyDatasetError, match=f"the dataset at {tmp_path / 'data'} has no rows$"):
        load_source(str(tmp_path / "data"))
    report = {"total": 3, "kept": 0, "removed_by_empty_caption": 2, "removed_by_complexity": 1,
              "removed_by_actions": 0}
    (tmp_path / "report.json").write_text(json.dumps({"report": report}))
    with pytest.raises(EmptyDatasetError, match="CAT removed all 3 pairs .*: empty_caption 2, complexity 1$"):
        load_source(str(tmp_path / "data"))


def test_loading_an_empty_data_file_says_it_has_no_rows(tmp_path):
    Dataset.from_dict({"caption": []}, features=Features({"caption": Value("string")})).to_parquet(
        str(tmp_path / "empty.parquet"))
    with pytest.raises(EmptyDatasetError, match="has no rows"):
        load_source(str(tmp_path / "empty.parquet"), cache_dir=str(tmp_path / "cache"))


# ---- item 6: an undecodable member of a webdataset shard ------------------------------------------------------

BAD_TEXTS = [b"caf\xe9 au lait on a table", b"a dog \xe2\x82", b"\xff\xfe"]  # latin-1, a cut UTF-8 sequence, junk


def shards_with_bad_members(folder) -> list[str]:
    """Two shards of 6 samples; shard 1 holds the non-UTF-8 captions of BAD_TEXTS (keys 00007-00009) and a .json
    that is not JSON (key 00010)."""
    folder.mkdir()
    paths = []
    for shard in range(2):
        samples = []
        for i in range(6 * shard, 6 * shard + 6):
            text = BAD_TEXTS[i - 7] if 7 <= i <= 9 else f"a dog number {i}".encode()
            meta = b"{not json" if i == 10 else json.dumps({"i": i}).encode()
            samples.append({"__key__": f"{i:05d}", "jpg": encode(scene(i, 16), "JPEG"), "txt": text, "json": meta})
        paths.append(write_raw_shard(folder / f"{shard:05d}.tar", samples))
    return paths


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("as_files", [False, True])
def test_a_non_utf8_caption_in_a_shard_is_repaired_and_named(tmp_path, caplog, streaming, as_files):
    paths = shards_with_bad_members(tmp_path / "shards")
    source = paths if as_files else str(tmp_path / "shards")
    with caplog.at_level(logging.WARNING, logger="image_text_data"):
        rows = list(load_source(source, streaming=streaming, cache_dir=str(tmp_path / "cache")))
    assert [row["__key__"] for row in rows] == [f"{i:05d}" for i in range(12)]
    for i, bad in zip(range(7, 10), BAD_TEXTS):
        assert rows[i]["txt"] == bad.decode("utf-8", errors="replace")  # Python's own replacement decoding
    assert rows[6]["txt"] == "a dog number 6" and rows[11]["txt"] == "a dog number 11"
    assert rows[10]["json"] is None and rows[11]["json"] == {"i": 11}
    named = [r.getMessage() for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert len(named) == 4
    assert all(paths[1] in message for message in named)
    assert [next(k for k in ("00007", "00008", "00009", "00010") if k in m) for m in named] == [
        "00007", "00008", "00009", "00010"]


DDP_SCRIPT = '''
import json, sys
from datasets import Dataset, Features, Sequence, Value
from tests.helpers import arguments, collator_for, scene_pairs, tiny_model, tokenizer_for
from trainers import DiHTTrainer

data = scene_pairs(16)
rows, tokenizer = data.to_list(), tokenizer_for(data)
args = arguments(sys.argv[1], max_steps=3)
for row in rows[:4]:  # the first batch of process 0 only: all undecodable
    row["image"] = {"bytes": b"dead domain", "path": None}
served = []


class Batches:  # process r serves rows 8r..8r+3, then 8r+4..8r+7, then the first again
    def __init__(self, dataset, *, batch_size, drop_last, seed, rank, world_size):
        self.batches = [list(range(8 * rank + 4 * k, 8 * rank + 4 * k + 4)) for k in (0, 1, 0)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class Recording:
    def __init__(self, collator):
        self.collator, self.counters = collator, collator.counters
        self.optional_counters = collator.optional_counters

    def __call__(self, batch_rows):
        batch = self.collator(batch_rows)
        served.append(batch["skipped_batches"])
        return batch


features = Features({**data.features, "concept_ids": Sequence(Value("int64"))})
trainer = DiHTTrainer(model=tiny_model(tokenizer), args=args, train_dataset=Dataset.from_list(rows, features=features),
                      data_collator=Recording(collator_for(tokenizer)), batch_sampler=Batches)
trainer.train()
losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
# One file per process: the two processes' stdout lines may interleave.
with open(f"{sys.argv[1]}/result{args.process_index}.json", "w") as out:
    json.dump({"rank": args.process_index, "stand_ins": served[:3], "losses": losses,
               "counts": trainer.skipped_counts}, out)
trainer.accelerator.end_training()
'''


def test_with_two_processes_a_stand_in_on_one_zero_weights_the_step_on_both_and_nothing_hangs(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with socket.socket() as probe:  # a free port: another run may hold accelerate's default 29500
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    script = tmp_path / "ddp_stand_in.py"
    script.write_text(DDP_SCRIPT)
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--num_processes", "2",
               "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
               str(script), str(tmp_path / "out")]
    done = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = [json.loads((tmp_path / "out" / f"result{rank}.json").read_text()) for rank in range(2)]
    assert [r["stand_ins"] for r in results] == [[1, 0, 0], [0, 0, 0]]  # only process 0 met the broken batch
    for result in results:
        assert result["losses"][0] == 0.0 and all(loss > 0 for loss in result["losses"][1:])
        # summed over both processes: 4 + 4 broken rows (the second time topped up from the batch before)
        assert result["counts"] == {"skipped_images": 8, "skipped_captions": 0, "reused_pairs": 2,
                                    "skipped_batches": 1}
    assert results[0]["losses"] == results[1]["losses"]  # logged losses are means over both processes
