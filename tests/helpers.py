"""What the tests build, offline and in code: images in the formats web data holds, tiny DiHT models and their data.

Every image is rendered here with PIL, every tokenizer built from the captions, every config tiny (2 layers of
width 32); no file is read or downloaded. Tests import from here (`from tests.helpers import ...`), never from each
other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from transformers import CLIPImageProcessor

from image_text_data.demo import CONCEPTS, build_scenes, build_word_tokenizer, concept_ids
from image_text_data.synthetic import SIZE, encode, scene, text_image  # noqa: F401  (re-exported for the tests)
from modeling_diht import DiHTConfig, DiHTModel
from trainers import DiHTTrainingArguments, diht_collator


def png16(value: int = 40000, size: int = 30) -> bytes:
    """A 16-bit grayscale PNG (decodable: must never be skipped)."""
    return encode(PILImage.fromarray(np.full((size, size), value, dtype=np.uint16)), "PNG")


def truncated_jpeg() -> bytes:
    data = encode(scene(5), "JPEG")
    return data[: len(data) // 2]


def sixteen_bit_png(value: int = 40000) -> bytes:
    """A 16-bit grayscale PNG whose pixels all hold `value` (of 65535)."""
    return encode(PILImage.fromarray(np.full((64, 64), value, dtype=np.uint16)), "PNG")



ACTION_CAPTION = "a brown dog runs on the green grass"


def cat_rows() -> list[tuple[str | None, bytes | None, str | None]]:
    """(caption, image bytes, the first CAT rule the row fails by the documented definitions, or None if kept)."""
    return [
        ("a dog", encode(scene(0)), "complexity"),  # one object, no attribute or relation
        ("", encode(scene(1)), "empty_caption"),
        (None, encode(scene(1)), "empty_caption"),
        ("a brown dog on the green grass", encode(scene(2)), "actions"),  # complex, but no verb
        (ACTION_CAPTION, encode(scene(2)), None),
        ("a man is riding a red bike", encode(text_image("OPEN DAILY")), None),  # text unrelated to the caption
        ("a woman holds a big sign for the sale", encode(text_image("BIG SALE")), "text_spotting"),
        (ACTION_CAPTION, truncated_jpeg(), "undecodable_image"),
        (ACTION_CAPTION, b"<html>404 not found</html>", "undecodable_image"),
        (ACTION_CAPTION, None, "undecodable_image"),
        ("a dog", b"not an image", "complexity"),  # caption rules first: the image is never decoded
    ]


def image_mode_rows() -> list[tuple[str, bytes, None]]:
    """Pairs that pass every caption rule, with images in the PIL modes web data holds: all must be kept."""
    rgba = scene(3).convert("RGBA")
    rgba.putalpha(128)
    caption = "a small cat sleeps on the red sofa"
    return [
        (caption, encode(scene(4).convert("L")), None),  # grayscale
        (caption, encode(rgba), None),  # RGBA
        (caption, encode(scene(6).convert("CMYK"), "JPEG"), None),  # CMYK
        (caption, sixteen_bit_png(), None),  # 16-bit
        (caption, encode(scene(7).convert("P")), None),  # palette
    ]


def cat_dataset(rows=None) -> Dataset:
    """The rows above as an in-memory dataset with an `Image()` column (bytes stored undecoded, as on the Hub)."""
    rows = cat_rows() if rows is None else rows
    images = [None if data is None else {"bytes": data, "path": None} for _, data, _ in rows]
    features = Features({"image": Image(), "caption": Value("string"), "row": Value("int64")})
    return Dataset.from_dict({"image": images, "caption": [c for c, _, _ in rows], "row": list(range(len(rows)))},
                             features=features)


# ---- tiny DiHT models -----------------------------------------------------------------------------------------------

TINY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
IMAGE_SIZE = 30


def tiny_config(**overrides) -> DiHTConfig:
    """A DiHT configuration small enough for CPU tests: 2 layers of width 32, 30 px images in 2 px patches."""
    kwargs = {
        "text_config": dict(TINY_TOWER),
        "vision_config": {**TINY_TOWER, "image_size": IMAGE_SIZE, "patch_size": 2},
        "projection_dim": 16,
    }
    kwargs.update(overrides)
    return DiHTConfig(**kwargs)


def random_batch(batch_size: int = 4, seq_len: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids shaped like OpenAI CLIP's: <|startoftext|> words <|endoftext|> then 0-padding."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for row in range(batch_size):
        length = 3 + row % (seq_len - 2)  # SOT + words + EOT, different lengths per row
        input_ids[row, 0] = 49406
        input_ids[row, 1 : length - 1] = torch.randint(1, 49000, (length - 2,), generator=generator)
        input_ids[row, length - 1] = 49407
        attention_mask[row, :length] = 1
    pixel_values = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


# ---- tiny DiHT training -------------------------------------------------------------------------------------------

def scene_pairs(num: int, seed: int = 0) -> Dataset:
    """Rendered pairs with undecoded image bytes and the true colour/shape concepts as `concept_ids`."""
    scenes = build_scenes(num, image_size=IMAGE_SIZE, seed=seed)
    scenes = scenes.cast_column("image", Image(decode=False))
    return scenes.add_column("concept_ids", [concept_ids(label) for label in scenes["label"]])


def tokenizer_for(dataset: Dataset):
    return build_word_tokenizer(list(dataset["caption"]))


def tiny_model(tokenizer, seed: int = 0, concepts: bool = True) -> DiHTModel:
    """A tiny DiHT over the word tokenizer's vocabulary, with a concept head over the demo's concepts."""
    torch.manual_seed(seed)
    text = {**TINY_TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 16,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id}
    heads = {"concepts": len(CONCEPTS)} if concepts else None
    return DiHTModel(tiny_config(text_config=text, concept_head_sizes=heads))


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def collator_for(tokenizer, **kwargs):
    """DiHT's collator with concept targets over the demo's concepts."""
    return diht_collator(tokenizer, image_processor(), num_concepts=len(CONCEPTS), **kwargs)


def arguments(tmp_path, **overrides) -> DiHTTrainingArguments:
    """One plain SGD step of 4 pairs on CPU, logged every step, nothing saved (override any field)."""
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, learning_rate=0.5,
                  optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
                  logging_steps=1, save_strategy="no", report_to="none", seed=0, use_cpu=True,
                  disable_tqdm=True, dataloader_pin_memory=False)
    values.update(overrides)
    return DiHTTrainingArguments(**values)


def save_tiny_checkpoint(folder, model, tokenizer) -> str:
    """A complete checkpoint folder (weights, tokenizer, image processor), as a warm start or evaluation input."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor().save_pretrained(folder)
    return str(folder)


# ---- the example commands -------------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def warm_start_inputs(root: Path) -> list[str]:
    """A saved dataset of 32 scene pairs with teacher concepts and a tiny checkpoint folder (weights, tokenizer, image
    processor) under `root`, as `pretrain.py` options: every launcher then starts from the same weights (ZeRO-3
    initialises random weights partitioned, with other random draws)."""
    from datasets import ClassLabel, List

    data = scene_pairs(32, seed=7).cast_column("concept_ids", List(ClassLabel(names=list(CONCEPTS))))
    data.save_to_disk(root / "data")
    tokenizer = tokenizer_for(data)
    save_tiny_checkpoint(root / "model", tiny_model(tokenizer), tokenizer)
    return ["--dataset_path", str(root / "data"), "--model_name_or_path", str(root / "model")]


def run_example(name: str, argv: list[str]) -> None:
    """Run `examples/<name>.py` with these command-line arguments, in this process, as `python` would run it
    (`runpy.run_path` with `__name__ == "__main__"`): the tests read what the command writes, as a user does."""
    import runpy
    import sys

    script = EXAMPLES / f"{name}.py"
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved


def example_error(name: str, argv: list[str]) -> str:
    """Run `examples/<name>.py` as `run_example` does, expecting it to stop with a message (`SystemExit`), and return
    that message; an example that finishes, or stops with a traceback instead, fails the calling test."""
    import pytest

    with pytest.raises(SystemExit) as stopped:
        run_example(name, argv)
    assert isinstance(stopped.value.code, str), f"exit status {stopped.value.code!r} instead of a message"
    return stopped.value.code


def truncate_file(path, keep: float = 0.5) -> None:
    """Cut a file to a share of its bytes, as an interrupted copy or download leaves it."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# One plain SGD step on CPU: no warm-up, clipping or weight decay, so the update is -lr * gradient, nothing else.
ONE_SGD_STEP = ["--max_steps", "1", "--optim", "sgd", "--learning_rate", "0.5", "--lr_scheduler_type", "constant",
                "--warmup_steps", "0", "--weight_decay", "0", "--max_grad_norm", "0", "--logging_steps", "1",
                "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none",
                "--cat_text_spotting", "false"]  # caption rules only: OCR is tested elsewhere and costs seconds


# ---- inputs real web data holds: spacers, banners, broken shard members (issue 13) ---------------------------------

EXTREME_SHAPES = [(4000, 1), (1, 4000), (3000, 2), (5, 2000), (1, 1)]  # spacers, rules, tracking pixels


def png_of_size(width: int, height: int, value: int = 255, mode: str = "L") -> bytes:
    """A PNG of one colour and the given shape (a few hundred bytes even for a long strip)."""
    return encode(PILImage.new(mode, (width, height), value), "PNG")


def banner(width: int, height: int, text: str) -> PILImage.Image:
    """Black text on a white strip, the letters 60% of the strip's height, from its left end."""
    from PIL import ImageDraw, ImageFont

    image = PILImage.new("RGB", (width, height), "white")
    font = ImageFont.load_default(size=max(1, int(height * 0.6)))
    ImageDraw.Draw(image).text((10, height // 2), text, fill="black", font=font, anchor="lm")
    return image


def write_raw_shard(path, samples: list[dict[str, bytes]]) -> str:
    """A webdataset `.tar` written member by member: each sample `{"__key__": key, "jpg": bytes, "txt": bytes, ...}`
    becomes `{key}.{field}` files holding exactly those bytes (so a test can plant a non-UTF-8 caption)."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample["__key__"]
            for field, data in sample.items():
                if field == "__key__":
                    continue
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)
