"""DiHTModel: CLIP-compatible outputs, HN-NCE loss, concept heads, serialisation and the Auto classes."""

import json
import os
import subprocess
import sys
import textwrap

import open_clip
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    CLIPConfig,
    CLIPModel,
)

from modeling_diht import DIHT_PRESETS, DiHTConfig, DiHTModel
from tests.helpers import tiny_config


def _clip_twin(model: DiHTModel) -> CLIPModel:
    """transformers' own CLIPModel with the same configuration values and weights (the independent reference)."""
    cfg = model.config
    clip_config = CLIPConfig(
        text_config=cfg.text_config.to_dict(),
        vision_config=cfg.vision_config.to_dict(),
        projection_dim=cfg.projection_dim,
        logit_scale_init_value=cfg.logit_scale_init_value,
    )
    clip = CLIPModel(clip_config).eval()
    missing, unexpected = clip.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("concept_heads.") for k in unexpected)
    return clip


def test_forward_returns_clip_fields_with_documented_shapes(config, batch):
    model = DiHTModel(config).eval()
    out = model(**batch)
    assert out.logits_per_image.shape == (4, 4)
    assert torch.equal(out.logits_per_text, out.logits_per_image.t())
    assert out.image_embeds.shape == out.text_embeds.shape == (4, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(4))
    assert out.loss is None and out.concept_logits is None


def test_outputs_equal_transformers_clip_with_the_same_weights(config, batch):
    model = DiHTModel(config).eval()
    clip = _clip_twin(model)
    ours, theirs = model(**batch), clip(**batch)
    torch.testing.assert_close(ours.logits_per_image, theirs.logits_per_image)
    torch.testing.assert_close(ours.image_embeds, theirs.image_embeds)
    torch.testing.assert_close(ours.text_embeds, theirs.text_embeds)


def test_loss_with_alpha_one_beta_zero_equals_clip_loss(batch):
    model = DiHTModel(tiny_config(hn_nce_alpha=1.0, hn_nce_beta=0.0)).eval()
    clip = _clip_twin(model)
    torch.testing.assert_close(model(**batch, return_loss=True).loss, clip(**batch, return_loss=True).loss)


def test_loss_uses_hn_nce_with_the_config_alpha_and_beta(batch):
    model = DiHTModel(tiny_config(hn_nce_alpha=0.5, hn_nce_beta=1.0)).eval()
    out = model(**batch, return_loss=True)
    # Reference: the paper's formula with explicit weights, on the model's own normalised embeddings.
    S = (model.logit_scale.exp() * out.image_embeds @ out.text_embeds.t()).double()
    B = S.shape[0]

    def direction(S):
        losses = []
        for i in range(B):
            neg = [j for j in range(B) if j != i]
            w = (B - 1) * torch.exp(1.0 * S[i, neg]) / torch.exp(1.0 * S[i, neg]).sum()
            den = 0.5 * torch.exp(S[i, i]) + (w * torch.exp(S[i, neg])).sum()
            losses.append(-torch.log(torch.exp(S[i, i]) / den))
        return torch.stack(losses).mean()

    expected = (direction(S) + direction(S.t())) / 2
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_loss_gradient_reaches_both_towers_and_logit_scale(config, batch):
    model = DiHTModel(config)
    model(**batch, return_loss=True).loss.backward()
    for name in ("logit_scale", "visual_projection.weight", "text_projection.weight",
                 "vision_model.embeddings.patch_embedding.weight", "text_model.embeddings.token_embedding.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_concept_heads_predict_from_the_pooled_image_tower_output(batch):
    model = DiHTModel(tiny_config(concept_head_sizes={"objects": 7, "attributes": 3, "unused": 0})).eval()
    out = model(**batch)
    assert set(out.concept_logits) == {"objects", "attributes"}
    pooled = model.vision_model(pixel_values=batch["pixel_values"]).pooler_output
    head = model.concept_heads["objects"]
    torch.testing.assert_close(out.concept_logits["objects"], pooled @ head.weight.t() + head.bias)
    assert out.concept_logits["attributes"].shape == (4, 3)


def test_negative_concept_head_size_is_rejected():
    with pytest.raises(ValueError, match="concept_head_sizes"):
        tiny_config(concept_head_sizes={"objects": -1})


def test_get_features_return_transformers5_outputs_with_projected_embeddings(config, batch):
    model = DiHTModel(config).eval()
    image = model.get_image_features(pixel_values=batch["pixel_values"])
    text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    out = model(**batch)
    torch.testing.assert_close(F.normalize(image.pooler_output, dim=-1), out.image_embeds)
    torch.testing.assert_close(F.normalize(text.pooler_output, dim=-1), out.text_embeds)


def test_text_is_pooled_at_the_first_end_of_text_token(config):
    model = DiHTModel(config).eval()
    ids = torch.tensor([[49406, 320, 1125, 49407, 0, 0]])
    padded_differently = torch.tensor([[49406, 320, 1125, 49407, 7, 9]])  # causal mask: tokens after EOT are unseen
    a = model.get_text_features(input_ids=ids).pooler_output
    b = model.get_text_features(input_ids=padded_differently).pooler_output
    torch.testing.assert_close(a, b)


def test_eager_and_sdpa_attention_agree(config, batch):
    sdpa = DiHTModel(config).eval()
    assert sdpa.config._attn_implementation == "sdpa"
    eager = DiHTModel(tiny_config()).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    torch.testing.assert_close(sdpa(**batch).logits_per_image, eager(**batch).logits_per_image, rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(config, batch):
    torch.manual_seed(0)
    plain = DiHTModel(config)
    ckpt = DiHTModel(tiny_config())
    ckpt.load_state_dict(plain.state_dict())
    ckpt.activation_checkpointing_enable()  # transformers 5.23 name of gradient_checkpointing_enable
    plain.train(), ckpt.train()
    plain(**batch, return_loss=True).loss.backward()
    ckpt(**batch, return_loss=True).loss.backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_save_and_load_round_trip_uses_safetensors(tmp_path, batch):
    model = DiHTModel(tiny_config(concept_head_sizes={"objects": 5})).eval()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".ckpt")) for f in files)
    loaded = DiHTModel.from_pretrained(tmp_path).eval()
    assert loaded.config.concept_head_sizes == {"objects": 5}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)
    torch.testing.assert_close(loaded(**batch).concept_logits["objects"], model(**batch).concept_logits["objects"])


def test_auto_classes_resolve_to_diht(tmp_path, config):
    assert type(AutoConfig.for_model("diht")) is DiHTConfig
    assert type(AutoModel.from_config(config)) is DiHTModel
    DiHTModel(config).save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is DiHTModel
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(tmp_path)) is DiHTModel


def test_saved_folder_carries_auto_map_and_modeling_files(tmp_path, config):
    DiHTModel(config).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_diht.DiHTConfig",
        "AutoModel": "modeling_diht.DiHTModel",
        "AutoModelForZeroShotImageClassification": "modeling_diht.DiHTModel",
    }
    assert {"configuration_diht.py", "modeling_diht.py", "loss_diht.py"} <= set(os.listdir(tmp_path))


def test_remote_code_loads_in_a_process_that_never_imported_the_package(tmp_path, config, batch):
    model = DiHTModel(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    torch.save(batch, tmp_path / "batch.pt")
    expected = model(**batch).logits_per_image
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel, AutoModelForZeroShotImageClassification
        for auto in (AutoModel, AutoModelForZeroShotImageClassification):
            model = auto.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert not any(name == "modeling_diht" or name.startswith("modeling_diht.") for name in sys.modules)
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            torch.save(model(**batch).logits_per_image, {str(tmp_path / "logits.pt")!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    # Run from an empty folder so the repository checkout is not on sys.path.
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)


@pytest.mark.parametrize("preset, open_clip_name", [
    ("diht_vitb32_224px", "ViT-B-32"),
    ("diht_vitb16_224px", "ViT-B-16"),
    ("diht_vitl14_224px", "ViT-L-14"),
    ("diht_vitl14_336px", "ViT-L-14-336"),
])
def test_presets_match_open_clip_architectures(preset, open_clip_name):
    """DiHT's official configs: the released models are open_clip's ViT configs; same dimensions, same parameter count."""
    reference = open_clip.get_model_config(open_clip_name)
    config = DiHTConfig.from_preset(preset)
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.patch_size, vision.num_hidden_layers, vision.hidden_size) == (
        reference["vision_cfg"]["image_size"], reference["vision_cfg"]["patch_size"],
        reference["vision_cfg"]["layers"], reference["vision_cfg"]["width"])
    assert vision.hidden_size // vision.num_attention_heads == reference["vision_cfg"].get("head_width", 64)
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.vocab_size,
            text.max_position_embeddings) == (reference["text_cfg"]["layers"], reference["text_cfg"]["width"],
                                              reference["text_cfg"]["heads"], reference["text_cfg"]["vocab_size"],
                                              reference["text_cfg"]["context_length"])
    assert config.projection_dim == reference["embed_dim"]
    assert text.hidden_act == vision.hidden_act == "gelu" and not reference.get("quick_gelu", False)
    with torch.device("meta"):
        ours = DiHTModel(config)
        theirs = open_clip.create_model(open_clip_name, pretrained=None, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="diht_vitb16_224px"):
        DiHTConfig.from_preset("diht_vitz99")


def test_sub_configs_accept_clip_field_names():
    config = DiHTConfig(text_config={"hidden_size": 64, "num_attention_heads": 2, "max_position_embeddings": 32},
                        vision_config={"image_size": 64, "patch_size": 8})
    assert config.text_config.max_position_embeddings == 32 and config.vision_config.patch_size == 8
    assert config.text_config.hidden_act == "gelu" and config.text_config.pad_token_id == 0
    assert set(DIHT_PRESETS) == {"diht_vitb32_224px", "diht_vitb16_224px", "diht_vitl14_224px", "diht_vitl14_336px"}


def test_a_clip_checkpoint_warm_starts_diht_with_identical_outputs(tmp_path, batch):
    """CLIP checkpoints keep their own activation (QuickGELU) and load key for key."""
    clip_config = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                          "num_attention_heads": 4},
                             vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                            "num_attention_heads": 4, "image_size": 30, "patch_size": 2},
                             projection_dim=16)
    clip = CLIPModel(clip_config).eval()
    clip.save_pretrained(tmp_path)
    model = DiHTModel.from_pretrained(tmp_path).eval()
    assert model.config.text_config.hidden_act == "quick_gelu"
    torch.testing.assert_close(model(**batch).logits_per_image, clip(**batch).logits_per_image)


def test_a_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert' model, not DiHT"):
        DiHTModel.from_pretrained(tmp_path)


def test_concept_heads_start_at_the_projection_scale():
    # Logits of order 1 at initialisation: weights ~ N(0, vision_width^-0.5), zero bias (not the generic std of 1).
    torch.manual_seed(0)
    model = DiHTModel(tiny_config(concept_head_sizes={"concepts": 4000}))
    head = model.concept_heads["concepts"]
    expected_std = model.config.vision_config.hidden_size**-0.5
    assert abs(head.weight.std().item() - expected_std) < 0.05 * expected_std
    assert torch.count_nonzero(head.bias) == 0
