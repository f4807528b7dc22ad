"""Specification of the original-checkpoint converter (`modeling_diht/convert_diht_original_to_hf.py`).

The official DiHT checkpoints (arXiv 2301.02280) are OpenAI-CLIP-named state dicts that load into open_clip's
non-QuickGELU models (DiHT's official configs), so a randomly initialised open_clip model stands in for them: every expected
value below (embeddings, logit scale, token ids, pixels, real architectures' shapes) comes from open_clip, never from
the converter. The numerical tests use a tiny architecture; the released ones are only inspected on the meta device.
CPU only, offline.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import ftfy  # an open_clip dependency
import open_clip
import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP
from safetensors.torch import save_file

from modeling_diht import DiHTConfig, DiHTModel
from modeling_diht.convert_diht_original_to_hf import (
    CheckpointMismatchError,
    convert_checkpoint,
    convert_state_dict,
    infer_preset,
    load_original_state_dict,
)
from modeling_diht.processing_diht import build_image_processor, build_tokenizer, default_bpe_path

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = [
    "a photo of a cat.",
    "A Dog Running on the BEACH!!",
    "It's 3:45pm, isn't it? They've got 1,000,000 people; we'll see.",
    "two men riding horses across a field at sunset",
    "The Eiffel Tower (Paris, 1889) - 330m tall!",
    "she'd said: \"don't touch\" ... ok?!",
    "  extra   spaces\tand\nnewlines  ",
    "café naïve résumé",
    "e-mail me @ john.doe@example.com #hashtag $100 50% off",
    "wow! great! ! !",
    "",
    "a very long caption " * 30,  # longer than 77 tokens: truncated, last token is end-of-text
]
# Text that OpenAI / open_clip change with ftfy.fix_text and html.unescape before tokenising (documented difference).
FTFY_CAPTIONS = ["don’t “quote” me", "fish &amp; chips", "ﬁsh", "ＡＢＣ"]


def _tiny_cfgs(image_size: int = 30) -> tuple[CLIPVisionCfg, CLIPTextCfg]:
    vision = CLIPVisionCfg(layers=2, width=32, head_width=8, mlp_ratio=4.0, patch_size=2, image_size=image_size)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=4, layers=2, mlp_ratio=4.0)
    return vision, text


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter off its initial value (LayerNorm ones/zeros, zero biases), so that a swapped weight and
    bias, or a wrong q/k/v order, changes the outputs."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        model.logit_scale.fill_(3.0)  # exp(3) ≈ 20.1, away from the initial 1/0.07
    return model.eval()


def _tiny_config() -> DiHTConfig:
    """The DiHT configuration equal to `_tiny_cfgs()`, written out by hand."""
    tower = {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    return DiHTConfig(
        text_config=dict(tower),
        vision_config={**tower, "image_size": 30, "patch_size": 2},
        projection_dim=16,
    )


def _meta_open_clip_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Keys and shapes of a real open_clip architecture, without allocating its weights."""
    with torch.device("meta"):
        model = CLIP(**open_clip.get_model_config(name))
    return model.state_dict()


@pytest.fixture(scope="module")
def reference_model() -> CLIP:
    vision, text = _tiny_cfgs()
    return _perturbed(CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text, quick_gelu=False))


@pytest.fixture(scope="module")
def reference_tokenizer():
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def checkpoint_files(reference_model, tmp_path_factory) -> dict[str, Path]:
    """The reference weights saved the way DiHT ships them (`torch.save` of a plain state dict) and as safetensors."""
    folder = tmp_path_factory.mktemp("original")
    state_dict = {key: value.contiguous() for key, value in reference_model.state_dict().items()}
    files = {"ckpt": folder / "tiny.ckpt", "safetensors": folder / "tiny.safetensors"}
    torch.save(state_dict, files["ckpt"])
    save_file(state_dict, str(files["safetensors"]))
    return files


def _reference_outputs(model: CLIP, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            "image_embeds": model.encode_image(pixel_values, normalize=True),
            "text_embeds": model.encode_text(input_ids, normalize=True),
            "logit_scale": model.logit_scale.exp(),
        }


def _assert_matches_reference(model: DiHTModel, reference: CLIP, reference_tokenizer, **text_inputs) -> None:
    pixel_values = torch.randn(3, 3, 30, 30, generator=torch.Generator().manual_seed(1))
    expected = _reference_outputs(reference, pixel_values, reference_tokenizer(CAPTIONS[:4]))
    with torch.no_grad():
        output = model(pixel_values=pixel_values, **text_inputs)
    torch.testing.assert_close(output.image_embeds, expected["image_embeds"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.text_embeds, expected["text_embeds"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.logit_scale.exp(), expected["logit_scale"], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ numerical match


@pytest.mark.parametrize("file_format", ["ckpt", "safetensors"])
def test_converted_weights_reproduce_open_clip_embeddings(
    file_format, checkpoint_files, reference_model, reference_tokenizer
):
    original = load_original_state_dict(checkpoint_files[file_format], allow_pickle=file_format == "ckpt")
    model = DiHTModel(_tiny_config()).eval()
    model.load_state_dict(convert_state_dict(original, _tiny_config()), strict=True)

    _assert_matches_reference(
        model, reference_model, reference_tokenizer, input_ids=reference_tokenizer(CAPTIONS[:4])
    )


def test_our_tokenizer_with_attention_mask_gives_open_clip_text_embeddings(
    checkpoint_files, reference_model, reference_tokenizer, tokenizer
):
    model = DiHTModel(_tiny_config()).eval()
    model.load_state_dict(convert_state_dict(load_original_state_dict(checkpoint_files["safetensors"]), _tiny_config()))
    text_inputs = tokenizer(CAPTIONS[:4], padding="max_length", max_length=77, truncation=True, return_tensors="pt")

    _assert_matches_reference(model, reference_model, reference_tokenizer, **text_inputs)


def test_open_clip_custom_text_naming_converts():
    # open_clip's CustomTextCLIP keeps the text tower under `text.`; the weights are the same.
    vision, text = _tiny_cfgs()
    reference = _perturbed(CustomTextCLIP(embed_dim=16, vision_cfg=vision, text_cfg=text, quick_gelu=False))
    model = DiHTModel(_tiny_config()).eval()
    model.load_state_dict(convert_state_dict(reference.state_dict(), _tiny_config()), strict=True)
    input_ids = torch.randint(1, 49406, (2, 77), generator=torch.Generator().manual_seed(2))
    input_ids[:, 0], input_ids[:, 9], input_ids[:, 10:] = 49406, 49407, 0

    with torch.no_grad():
        expected = reference.encode_text(input_ids, normalize=True)
        actual = model(input_ids=input_ids, pixel_values=torch.zeros(1, 3, 30, 30)).text_embeds
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ command line


def test_command_line_writes_a_folder_the_auto_classes_load(
    checkpoint_files, reference_model, reference_tokenizer, tmp_path
):
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer

    config_json = tmp_path / "tiny_config.json"
    _tiny_config().to_json_file(config_json)
    output_dir = tmp_path / "converted"
    command = [
        sys.executable, "-m", "modeling_diht.convert_diht_original_to_hf",
        "--checkpoint", str(checkpoint_files["ckpt"]), "--config_json", str(config_json),
        "--output_dir", str(output_dir), "--allow_pickle",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    written = {path.name for path in output_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= written
    assert {"preprocessor_config.json", "processor_config.json", "conversion_summary.json"} <= written
    assert "auto_map" in json.loads((output_dir / "config.json").read_text())
    summary = json.loads((output_dir / "conversion_summary.json").read_text())
    assert summary["num_tensors"] == len(reference_model.state_dict())

    model = AutoModel.from_pretrained(output_dir).eval()
    assert isinstance(model, DiHTModel)
    _assert_matches_reference(model, reference_model, reference_tokenizer, input_ids=reference_tokenizer(CAPTIONS[:4]))

    loaded_tokenizer = AutoTokenizer.from_pretrained(output_dir)
    ids = loaded_tokenizer(CAPTIONS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert torch.equal(ids.input_ids, reference_tokenizer(CAPTIONS))

    image_processor = AutoImageProcessor.from_pretrained(output_dir)
    assert image_processor.crop_size == {"height": 30, "width": 30}
    assert AutoProcessor.from_pretrained(output_dir).tokenizer.pad_token_id == 0


def test_converted_folder_gives_open_clip_probabilities_in_the_zero_shot_pipeline(
    checkpoint_files, reference_model, reference_tokenizer, tmp_path
):
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    folder = convert_checkpoint(checkpoint_files["safetensors"], None, tmp_path / "converted", config=_tiny_config())
    labels = ["a mountain", "a beach", "a desert"]
    image = Image.fromarray(torch.randint(0, 256, (40, 52, 3), generator=torch.Generator().manual_seed(5),
                                          dtype=torch.uint8).numpy())
    classifier = pipeline("zero-shot-image-classification", model=str(folder),
                          image_processor=AutoImageProcessor.from_pretrained(folder, backend="pil"))
    scores = {p["label"]: p["score"] for p in classifier(image, candidate_labels=labels,
                                                          hypothesis_template="a photo of {}.")}

    # open_clip's own zero-shot computation: its preprocessing, tokenizer, encoders and logit scale.
    pixels = open_clip.image_transform(30, is_train=False)(image)[None]
    reference = _reference_outputs(reference_model, pixels, reference_tokenizer([f"a photo of {x}." for x in labels]))
    expected = (reference["logit_scale"] * reference["image_embeds"] @ reference["text_embeds"].T).softmax(-1)[0]
    torch.testing.assert_close(torch.tensor([scores[x] for x in labels]), expected, atol=1e-5, rtol=1e-4)


def test_command_line_reports_bad_input_without_traceback(checkpoint_files, tmp_path):
    from modeling_diht.convert_diht_original_to_hf import main

    with pytest.raises(SystemExit, match="--allow_pickle"):
        main(["--checkpoint", str(checkpoint_files["ckpt"]), "--output_dir", str(tmp_path / "out")])


# ------------------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_is_openai_clip_bpe(tokenizer):
    assert len(tokenizer) == 49408
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 0)
    assert tokenizer.model_max_length == 77


def test_tokenizer_matches_open_clip_on_captions(tokenizer, reference_tokenizer):
    ids = tokenizer(CAPTIONS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    assert torch.equal(ids, reference_tokenizer(CAPTIONS))


def test_tokenizer_matches_open_clip_after_ftfy_and_html_cleaning(tokenizer, reference_tokenizer):
    # Documented difference: OpenAI runs ftfy.fix_text and html.unescape; cleaning the text first closes the gap.
    cleaned = [html.unescape(html.unescape(ftfy.fix_text(text))) for text in FTFY_CAPTIONS]
    ids = tokenizer(cleaned, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    assert torch.equal(ids, reference_tokenizer(FTFY_CAPTIONS))


def test_tokenizer_reads_a_given_bpe_file(reference_tokenizer):
    tokenizer = build_tokenizer(bpe_path=str(default_bpe_path()))
    ids = tokenizer(CAPTIONS[:2], padding="max_length", max_length=77, return_tensors="pt").input_ids

    assert torch.equal(ids, reference_tokenizer(CAPTIONS[:2]))


# ------------------------------------------------------------------------------------------------ image processor


def test_image_processor_gives_open_clip_pixels():
    from PIL import Image

    reference = open_clip.image_transform(224, is_train=False)  # OpenAI mean/std, bicubic, resize + centre crop
    processor = build_image_processor(224)
    generator = torch.Generator().manual_seed(3)
    for width, height, mode in [(300, 400, "RGB"), (640, 333, "RGB"), (225, 224, "L"), (100, 80, "RGB")]:
        pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator).numpy()
        image = Image.fromarray(pixels).convert(mode)

        actual = processor(images=image, return_tensors="pt").pixel_values[0]
        torch.testing.assert_close(actual, reference(image), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ bad input


def test_pickle_is_refused_without_allow_pickle(checkpoint_files):
    with pytest.raises(ValueError, match="allow_pickle") as error:
        load_original_state_dict(checkpoint_files["ckpt"])
    assert "weights_only=True" in str(error.value)


class _NotAWeight:
    pass


def test_pickle_with_arbitrary_objects_is_refused_even_with_allow_pickle(tmp_path):
    path = tmp_path / "object.ckpt"
    torch.save({"state_dict": {"logit_scale": torch.ones(())}, "extra": _NotAWeight()}, path)

    with pytest.raises(ValueError, match="weights_only=True"):
        load_original_state_dict(path, allow_pickle=True)


def test_containers_prefixes_and_metadata_are_unwrapped(tmp_path):
    weights = {"logit_scale": torch.tensor(2.0), "visual.proj": torch.ones(4, 2)}
    metadata = {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77), "attn_mask": torch.eye(2)}
    path = tmp_path / "training.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in {**weights, **metadata}.items()}}, path)

    loaded = load_original_state_dict(path, allow_pickle=True)

    assert loaded.keys() == weights.keys()
    torch.testing.assert_close(loaded["visual.proj"], weights["visual.proj"])


@pytest.mark.parametrize("file_format", ["ckpt", "safetensors"])
def test_truncated_file_gives_a_clear_error(file_format, checkpoint_files, tmp_path):
    data = checkpoint_files[file_format].read_bytes()
    truncated = tmp_path / f"truncated.{file_format}"
    truncated.write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match="truncated"):
        load_original_state_dict(truncated, allow_pickle=True)


def test_truncated_checkpoint_names_the_missing_keys(reference_model):
    original = dict(reference_model.state_dict())
    del original["transformer.resblocks.1.mlp.c_proj.weight"], original["visual.ln_post.bias"]

    with pytest.raises(CheckpointMismatchError, match="2 weights are missing") as error:
        convert_state_dict(original, _tiny_config())
    assert "transformer.resblocks.1.mlp.c_proj.weight" in str(error.value)
    assert "visual.ln_post.bias" in str(error.value)


def test_unknown_keys_are_named(reference_model):
    original = {**reference_model.state_dict(), "logit_bias": torch.zeros(()), "visual.head.weight": torch.zeros(2)}

    with pytest.raises(CheckpointMismatchError, match="2 keys are not DiHT weights") as error:
        convert_state_dict(original, _tiny_config())
    assert "logit_bias" in str(error.value) and "visual.head.weight" in str(error.value)


def test_wrong_architecture_names_the_key_its_shapes_and_the_matching_preset():
    original = _meta_open_clip_state_dict("ViT-B-32")

    with pytest.raises(CheckpointMismatchError) as error:
        convert_state_dict(original, DiHTConfig.from_preset("diht_vitb16_224px"))
    message = str(error.value)
    assert "visual.conv1.weight" in message and "(768, 3, 32, 32)" in message and "(768, 3, 16, 16)" in message
    assert "--model_name diht_vitb32_224px" in message
    assert error.value.suggested_preset == "diht_vitb32_224px"


def test_sha256_in_official_file_name_is_verified(checkpoint_files, tmp_path):
    renamed = tmp_path / f"diht_tiny_{'0' * 64}.safetensors"
    renamed.write_bytes(checkpoint_files["safetensors"].read_bytes())

    with pytest.raises(ValueError, match="SHA-256"):
        convert_checkpoint(renamed, None, tmp_path / "out", config=_tiny_config())


# ------------------------------------------------------------------------------------------------ architectures


@pytest.mark.parametrize(
    ("open_clip_name", "preset"),
    [
        ("ViT-B-32", "diht_vitb32_224px"),
        ("ViT-B-16", "diht_vitb16_224px"),
        ("ViT-L-14", "diht_vitl14_224px"),
        ("ViT-L-14-336", "diht_vitl14_336px"),
    ],
)
def test_infer_preset_recognises_open_clip_architectures(open_clip_name, preset):
    assert infer_preset(_meta_open_clip_state_dict(open_clip_name)) == preset


def test_infer_preset_returns_none_for_other_architectures(reference_model):
    assert infer_preset(reference_model.state_dict()) is None


def test_presets_accept_the_matching_open_clip_architecture():
    # Every key and shape of open_clip's ViT-L-14-336 fits the preset: conversion gets as far as copying tensors.
    original = _meta_open_clip_state_dict("ViT-L-14-336")
    converted = convert_state_dict(original, DiHTConfig.from_preset("diht_vitl14_336px"))

    assert converted["vision_model.embeddings.position_embedding.weight"].shape == (577, 1024)  # (336/14)² + 1
    assert converted["text_projection.weight"].shape == (768, 768)
