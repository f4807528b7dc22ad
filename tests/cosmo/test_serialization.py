"""Saving, loading, the Auto classes, remote code, the zero-shot pipeline and the BERT + ViT warm start."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForZeroShotImageClassification,
    BertConfig,
    BertForMaskedLM,
    ViTConfig,
    ViTModel,
    pipeline,
)

import modeling_cosmo
from modeling_cosmo import (
    COSMO_PRESETS,
    COSMO_REMOTE_CODE_FILES,
    CosmoConfig,
    CosmoForImageTextRetrieval,
    CosmoForPreTraining,
    CosmoModel,
)
from tests.cosmo.helpers import VOCAB, random_batch, random_images, tiny_config, tiny_image_processor, tiny_tokenizer


@pytest.fixture
def batch():
    return random_batch(batch_size=3, seq_len=6)


def test_save_and_load_round_trip_uses_safetensors(tmp_path, batch):
    torch.manual_seed(0)
    model = CosmoForPreTraining(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)
    loaded = CosmoForPreTraining.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)
    assert loaded.mlm_head.predictions.decoder.weight is loaded.text_model.embeddings.word_embeddings.weight
    torch.testing.assert_close(loaded(**batch).itc_loss, model(**batch).itc_loss)


def test_every_cosmo_class_loads_every_cosmo_checkpoint(tmp_path, batch):
    torch.manual_seed(0)
    CosmoForPreTraining(tiny_config()).save_pretrained(tmp_path)
    for cls in (CosmoModel, CosmoForImageTextRetrieval, CosmoForPreTraining):
        model, info = cls.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], cls.__name__


def test_auto_classes_resolve_to_cosmo(tmp_path):
    config = tiny_config()
    assert type(AutoConfig.for_model("cosmo")) is CosmoConfig
    assert type(AutoModel.from_config(config)) is CosmoModel
    CosmoForPreTraining(config).save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is CosmoModel
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(tmp_path)) is CosmoModel
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is CosmoForPreTraining


@pytest.mark.parametrize("cls", [CosmoModel, CosmoForImageTextRetrieval, CosmoForPreTraining])
def test_saved_folder_carries_auto_map_and_modeling_files(tmp_path, cls):
    cls(tiny_config()).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_cosmo.CosmoConfig",
        "AutoModel": "modeling_cosmo.CosmoModel",
        "AutoModelForZeroShotImageClassification": "modeling_cosmo.CosmoModel",
        "AutoModelForPreTraining": "modeling_cosmo.CosmoForPreTraining",
    }
    needed = {"configuration_cosmo.py", "modeling_cosmo.py", "loss_cosmo.py", "modeling_cosmo_layers.py",
              "modeling_cosmo_towers.py", "modeling_cosmo_outputs.py", "modeling_cosmo_pretraining.py",
              "warm_start_cosmo.py"}
    assert needed == set(COSMO_REMOTE_CODE_FILES)
    assert needed <= set(os.listdir(tmp_path))


def test_remote_code_files_import_only_the_standard_library_torch_transformers_and_siblings():
    import ast

    folder = Path(modeling_cosmo.__file__).parent
    for name in COSMO_REMOTE_CODE_FILES:
        tree = ast.parse((folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, (name, node.module)  # single-dot sibling imports
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for module in modules:
                    top = module.split(".")[0]
                    assert top in ("torch", "transformers") or top in sys.stdlib_module_names, (name, module)


def test_remote_code_loads_in_a_process_that_never_imported_the_package(tmp_path, batch):
    torch.manual_seed(0)
    model = CosmoForPreTraining(tiny_config()).eval()
    model.save_pretrained(tmp_path / "ckpt")
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        expected = model(**batch)
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel, AutoModelForPreTraining, AutoModelForZeroShotImageClassification
        folder = {str(tmp_path / "ckpt")!r}
        for auto in (AutoModel, AutoModelForZeroShotImageClassification, AutoModelForPreTraining):
            model = auto.from_pretrained(folder, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == "CosmoForPreTraining"
        assert not any(name == "modeling_cosmo" or name.startswith("modeling_cosmo.") for name in sys.modules)
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            out = model(**batch)
        torch.save({{"logits": out.logits_per_image, "itm": out.itm_logits}}, {str(tmp_path / "out.pt")!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    # Run from an empty folder so the repository checkout is not on sys.path.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-c", script], cwd=empty, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(got["logits"], expected.logits_per_image)
    torch.testing.assert_close(got["itm"], expected.itm_logits)


def test_zero_shot_pipeline_runs_on_cosmo(tmp_path):
    torch.manual_seed(0)
    model = CosmoModel(tiny_config()).eval()
    tokenizer, processor = tiny_tokenizer(), tiny_image_processor()
    classifier = pipeline("zero-shot-image-classification", model=model, tokenizer=tokenizer,
                          image_processor=processor)
    image = random_images(1)[0]
    labels = ["cat", "dog", "red car"]
    result = classifier(image, candidate_labels=labels, hypothesis_template="a photo of {}")
    # Independent computation: ITC probabilities of the image against the three prompts.
    texts = tokenizer([f"a photo of {label}" for label in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**texts, pixel_values=processor(images=[image], return_tensors="pt")["pixel_values"])
    expected = logits.logits_per_image.softmax(-1)[0]
    got = {entry["label"]: entry["score"] for entry in result}
    assert got == pytest.approx({label: p for label, p in zip(labels, expected.tolist())}, rel=1e-4)


def test_image_processor_resizes_to_256_with_clip_statistics():
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from modeling_cosmo import cosmo_image_processor

    processor = cosmo_image_processor()
    image = random_images(1, size=300)[0]
    pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 256, 256)
    resized = torch.tensor(list(image.resize((256, 256), resample=3).getdata()), dtype=torch.float32)
    resized = resized.view(256, 256, 3).permute(2, 0, 1) / 255.0
    expected = (resized - torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(pixels[0], expected, atol=2e-2, rtol=0)


def test_warm_start_from_bert_and_vit_folders(tmp_path):
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=4,
                                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=40)).eval()
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             image_size=24, patch_size=8, layer_norm_eps=1e-6), add_pooling_layer=False).eval()
    bert.save_pretrained(tmp_path / "bert")
    vit.save_pretrained(tmp_path / "vit")
    config = tiny_config()  # 32 px images: ViT's 3 x 3 position grid is resized to 4 x 4
    model = CosmoForPreTraining.from_text_vision_pretrained(tmp_path / "bert", tmp_path / "vit", config=config).eval()
    batch = random_batch(batch_size=2, seq_len=6)
    with torch.no_grad():
        # Text layers 0-1 are BERT's layers 0-1.
        hidden = bert.bert(batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True).hidden_states[2]
        mine = model.encode_text(batch["input_ids"], batch["attention_mask"])
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(mine[real], hidden[real], atol=1e-5, rtol=1e-5)
        # The image encoder is the ViT, with position embeddings interpolated to the new grid.
        expected = vit(batch["pixel_values"], interpolate_pos_encoding=True).last_hidden_state
        torch.testing.assert_close(model.encode_image(batch["pixel_values"]), expected, atol=1e-5, rtol=1e-5)
    fused = model.text_model.encoder.layer[2]
    bert_layer = bert.bert.encoder.layer[2]
    torch.testing.assert_close(fused.attention.self.query.weight, bert_layer.attention.self.query.weight)
    torch.testing.assert_close(fused.output.dense.weight, bert_layer.output.dense.weight)
    cross = fused.crossattention.self.query.weight
    assert 0.01 < cross.std() < 0.03  # initialised fresh, std 0.02
    torch.testing.assert_close(model.mlm_head.predictions.transform.dense.weight,
                               bert.cls.predictions.transform.dense.weight)
    assert model.temp.item() == pytest.approx(0.07)


def test_a_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    BertForMaskedLM(BertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                               intermediate_size=64)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="from_text_vision_pretrained"):
        CosmoModel.from_pretrained(tmp_path)


def test_preset_is_the_papers_base_model():
    config = CosmoConfig.from_preset("cosmo_vitb16_bert_base_256px")
    text, vision = config.text_config, config.vision_config
    assert set(COSMO_PRESETS) == {"cosmo_vitb16_bert_base_256px"}
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.fusion_layer,
            text.vocab_size) == (12, 768, 12, 6, 30522)
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers,
            vision.layer_norm_eps) == (256, 16, 768, 12, 1e-6)
    assert (config.embed_dim, config.temperature_init, config.temperature_min, config.temperature_max,
            config.mlm_probability, config.itc_smoothing, config.hard_negative_mode) == (
            256, 0.07, 0.001, 0.5, 0.5, 0.5, "argmax")
    with torch.device("meta"):
        model = CosmoForPreTraining(config)
    # ALBEF's pre-training model without its momentum copies: ViT-B/16 at 256 px (86.6 M with 257 positions),
    # BERT-base without pooler (108.9 M) plus 6 cross-attentions (6 x 2.36 M), projections, ITM and MLM heads.
    vit = 768 * 3 * 16 * 16 + 768 + 768 + 257 * 768 + 12 * (4 * 768 * 768 + 4 * 768 + 2 * 768 * 3072 + 3072 + 768
                                                            + 4 * 768) + 2 * 768
    bert = 30522 * 768 + 512 * 768 + 2 * 768 + 2 * 768 + 12 * (4 * 768 * 768 + 4 * 768 + 2 * 768
                                                               + 2 * 768 * 3072 + 3072 + 768 + 2 * 768)
    cross = 6 * (4 * 768 * 768 + 4 * 768 + 2 * 768)
    heads = 2 * (768 * 256 + 256) + 768 * 2 + 2 + 768 * 768 + 768 + 2 * 768 + 30522 + 1
    assert sum(p.numel() for p in model.parameters()) == vit + bert + cross + heads


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="cosmo_vitb16_bert_base_256px"):
        CosmoConfig.from_preset("cosmo_vitz99")


@pytest.mark.parametrize("bad", [{"temperature_min": 0.1}, {"itc_smoothing": 1.5}, {"hard_negative_mode": "top"},
                                 {"itc_loss": "clip"}, {"mlm_probability": 0.0}])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


def test_fusion_encoder_refuses_decoder_settings():
    with pytest.raises(ValueError, match="bidirectional"):
        tiny_config(text={"is_decoder": True})
