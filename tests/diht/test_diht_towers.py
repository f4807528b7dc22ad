"""DiHT's towers as transformers models: Auto classes, CLIP-compatible weights, remote code (issue 13, item 11).

The independent reference is transformers' own CLIP tower classes, given the same weights or the same folder.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoModel,
    AutoModelForTextEncoding,
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

import modeling_diht  # noqa: F401  (registers DiHT with the Auto classes)
from modeling_diht import (
    DiHTConfig,
    DiHTModel,
    DiHTTextModel,
    DiHTTextModelWithProjection,
    DiHTVisionModel,
    DiHTVisionModelWithProjection,
)

TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
VISION = {**TOWER, "image_size": 30, "patch_size": 2}


def tiny_config(**overrides) -> DiHTConfig:
    return DiHTConfig(text_config=dict(TOWER), vision_config=dict(VISION), projection_dim=16, **overrides)


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 30, 30, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.tensor([[49406, 320, 1125, 49407, 0], [49406, 7, 49407, 0, 0], [49406, 9, 10, 11, 49407]])


def test_auto_model_builds_the_towers_from_the_sub_configs():
    config = tiny_config()
    assert type(AutoModel.from_config(config.vision_config)) is DiHTVisionModel
    assert type(AutoModel.from_config(config.text_config)) is DiHTTextModel
    assert type(AutoModelForTextEncoding.from_config(config.text_config)) is DiHTTextModel


def test_tower_parameter_names_are_clips(pixels):
    config = tiny_config()
    for ours, theirs in ((DiHTVisionModel, CLIPVisionModel), (DiHTVisionModelWithProjection, CLIPVisionModelWithProjection)):
        assert list(ours(config.vision_config).state_dict()) == list(theirs(config.vision_config).state_dict())
    for ours, theirs in ((DiHTTextModel, CLIPTextModel), (DiHTTextModelWithProjection, CLIPTextModelWithProjection)):
        assert list(ours(config.text_config).state_dict()) == list(theirs(config.text_config).state_dict())


def test_sub_configs_carry_the_joint_space_size():
    config = tiny_config()
    assert config.vision_config.projection_dim == config.text_config.projection_dim == 16
    assert DiHTVisionModelWithProjection(config.vision_config).visual_projection.weight.shape == (16, 32)


def test_towers_load_from_a_diht_dual_encoder_folder_as_clip_towers_do(tmp_path, pixels, ids):
    DiHTModel(tiny_config(concept_head_sizes={"objects": 3})).save_pretrained(tmp_path)
    pairs = [
        (DiHTVisionModelWithProjection, CLIPVisionModelWithProjection, {"pixel_values": pixels}, "image_embeds"),
        (DiHTVisionModel, CLIPVisionModel, {"pixel_values": pixels}, "pooler_output"),
        (DiHTTextModelWithProjection, CLIPTextModelWithProjection, {"input_ids": ids}, "text_embeds"),
        (DiHTTextModel, CLIPTextModel, {"input_ids": ids}, "pooler_output"),
    ]
    for ours, theirs, inputs, field in pairs:
        model, info = ours.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"], (ours.__name__, info)
        reference = theirs.from_pretrained(tmp_path).eval()  # transformers' own loading of the same folder
        with torch.no_grad():
            torch.testing.assert_close(getattr(model.eval()(**inputs), field), getattr(reference(**inputs), field))


def test_a_clip_dual_encoder_checkpoint_loads_into_the_image_tower(tmp_path, pixels):
    clip = CLIPModel(CLIPConfig(text_config=dict(TOWER), vision_config=dict(VISION), projection_dim=16)).eval()
    clip.save_pretrained(tmp_path)
    tower = DiHTVisionModelWithProjection.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(tower(pixel_values=pixels).image_embeds,
                                   clip.get_image_features(pixel_values=pixels).pooler_output)
    assert tower.config.hidden_act == "quick_gelu"  # a CLIP warm start keeps CLIP's activation


@pytest.mark.parametrize("prefix", ["", "vision_model."])
def test_clip_image_tower_checkpoints_of_both_layouts_load(tmp_path, pixels, prefix):
    # transformers 5 saves CLIPVisionModel weights without a prefix; transformers 4 saved them under "vision_model.".
    clip = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
    clip.config.save_pretrained(tmp_path)
    save_file({prefix + k: v.contiguous() for k, v in clip.state_dict().items()}, tmp_path / "model.safetensors")
    tower, info = DiHTVisionModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(tower.eval()(pixel_values=pixels).pooler_output, clip(pixel_values=pixels).pooler_output)


def test_a_tower_folder_of_another_architecture_is_refused(tmp_path):
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert'"):
        DiHTVisionModel.from_pretrained(tmp_path)


def test_a_saved_tower_names_itself_for_remote_code_and_loads_without_the_package(tmp_path, pixels):
    tower = DiHTVisionModelWithProjection(tiny_config().vision_config).eval()
    tower.save_pretrained(tmp_path / "tower")
    saved = json.loads((tmp_path / "tower" / "config.json").read_text())
    assert saved["auto_map"] == {"AutoConfig": "configuration_diht.DiHTVisionConfig",
                                 "AutoModel": "modeling_diht.DiHTVisionModelWithProjection"}
    assert {"configuration_diht.py", "modeling_diht.py", "loss_diht.py"} <= set(os.listdir(tmp_path / "tower"))
    torch.save(pixels, tmp_path / "pixels.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "tower")!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "DiHTVisionModelWithProjection", type(model)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert not any(name.split(".")[0] == "modeling_diht" for name in sys.modules)
        with torch.no_grad():
            torch.save(model(pixel_values=torch.load({str(tmp_path / "pixels.pt")!r})).image_embeds,
                       {str(tmp_path / "embeds.pt")!r})
        """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "embeds.pt"), tower(pixel_values=pixels).image_embeds)
