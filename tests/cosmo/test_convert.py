"""`modeling_cosmo/convert_albef_original_to_hf.py`: ALBEF / GRIT-VLP / MAFA checkpoints to COSMO folders.

The original key layout (salesforce/ALBEF and jaeseokbyun/MAFA `models/vit.py`, `models/xbert.py`,
`models/model_pretrain*.py`) is written out here by hand, with random tensors of the right shapes.
"""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoImageProcessor, AutoTokenizer

from modeling_cosmo import CosmoForImageTextRetrieval, CosmoForPreTraining, CosmoModel
from modeling_cosmo.convert_albef_original_to_hf import (
    convert_albef_state_dict,
    convert_checkpoint,
    export_albef_state_dict,
    load_original_state_dict,
)
from tests.cosmo.helpers import VOCAB, random_batch, tiny_tokenizer


class Payload:
    """An object that is neither a tensor nor a plain container: weights_only loading must refuse it."""


REPO_ROOT = Path(__file__).resolve().parents[2]
D, FF, V, P, GRID, E = 32, 64, len(VOCAB), 8, 4, 16


def albef_state_dict(seed: int = 0, momentum: bool = True, retrieval: bool = False) -> dict[str, torch.Tensor]:
    """A random ALBEF pre-training state dict: 2 ViT blocks, BERT with 2 text + 2 fusion layers."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    sd = {"visual_encoder.cls_token": r(1, 1, D), "visual_encoder.pos_embed": r(1, GRID * GRID + 1, D),
          "visual_encoder.patch_embed.proj.weight": r(D, 3, P, P), "visual_encoder.patch_embed.proj.bias": r(D),
          "visual_encoder.norm.weight": 1 + r(D), "visual_encoder.norm.bias": r(D)}
    for i in range(2):
        b = f"visual_encoder.blocks.{i}."
        sd |= {b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
               b + "attn.qkv.bias": r(3 * D), b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
               b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D), b + "mlp.fc1.weight": r(FF, D),
               b + "mlp.fc1.bias": r(FF), b + "mlp.fc2.weight": r(D, FF), b + "mlp.fc2.bias": r(D)}
    bert = "text_encoder." if retrieval else "text_encoder.bert."
    sd |= {bert + "embeddings.word_embeddings.weight": r(V, D),
           bert + "embeddings.position_embeddings.weight": r(40, D),
           bert + "embeddings.token_type_embeddings.weight": r(2, D), bert + "embeddings.LayerNorm.weight": 1 + r(D),
           bert + "embeddings.LayerNorm.bias": r(D), bert + "embeddings.position_ids": torch.arange(40)[None]}

    def attention(prefix):
        return {prefix + "self.query.weight": r(D, D), prefix + "self.query.bias": r(D),
                prefix + "self.key.weight": r(D, D), prefix + "self.key.bias": r(D),
                prefix + "self.value.weight": r(D, D), prefix + "self.value.bias": r(D),
                prefix + "output.dense.weight": r(D, D), prefix + "output.dense.bias": r(D),
                prefix + "output.LayerNorm.weight": 1 + r(D), prefix + "output.LayerNorm.bias": r(D)}

    for i in range(4):
        b = f"{bert}encoder.layer.{i}."
        sd |= attention(b + "attention.")
        if i >= 2:
            sd |= attention(b + "crossattention.")
        sd |= {b + "intermediate.dense.weight": r(FF, D), b + "intermediate.dense.bias": r(FF),
               b + "output.dense.weight": r(D, FF), b + "output.dense.bias": r(D),
               b + "output.LayerNorm.weight": 1 + r(D), b + "output.LayerNorm.bias": r(D)}
    if not retrieval:
        bias = r(V)
        sd |= {"text_encoder.cls.predictions.bias": bias,
               "text_encoder.cls.predictions.transform.dense.weight": r(D, D),
               "text_encoder.cls.predictions.transform.dense.bias": r(D),
               "text_encoder.cls.predictions.transform.LayerNorm.weight": 1 + r(D),
               "text_encoder.cls.predictions.transform.LayerNorm.bias": r(D),
               "text_encoder.cls.predictions.decoder.weight": sd[bert + "embeddings.word_embeddings.weight"],
               "text_encoder.cls.predictions.decoder.bias": bias}
    sd |= {"vision_proj.weight": r(E, D), "vision_proj.bias": r(E), "text_proj.weight": r(E, D),
           "text_proj.bias": r(E), "itm_head.weight": r(2, D), "itm_head.bias": r(2), "temp": torch.tensor(0.05)}
    if momentum:
        for key in [k for k in sd if k.startswith(("visual_encoder.", "text_encoder.", "vision_proj.", "text_proj."))]:
            head, rest = key.split(".", 1)
            sd[f"{head}_m.{rest}"] = sd[key].clone()
        sd |= {"image_queue": r(E, 64), "text_queue": r(E, 64), "idx_queue": torch.full((1, 64), -100),
               "queue_ptr": torch.zeros(1, dtype=torch.long)}
    return sd


# The mapping, written independently of the converter: original prefix -> COSMO prefix.
def expected_name(key: str) -> str | None:
    if key.split(".")[0].endswith("_m") or key in ("image_queue", "text_queue", "idx_queue", "queue_ptr"):
        return None
    if key.endswith("position_ids"):
        return None
    for old, new in (("visual_encoder.", "vision_model."), ("text_encoder.bert.", "text_model."),
                     ("text_encoder.cls.", "mlm_head."), ("text_encoder.", "text_model.")):
        if key.startswith(old):
            return new + key[len(old):]
    return key


def test_every_key_is_converted_or_dropped_and_round_trips():
    original = albef_state_dict()
    converted, dropped = convert_albef_state_dict(original)
    for key, value in original.items():
        name = expected_name(key)
        if name is None:
            assert key in dropped, key
        else:
            torch.testing.assert_close(converted[name].reshape(value.shape), value, msg=key)
    assert len(converted) + len(dropped) == len(original)
    assert converted["temp"].shape == (1,)
    back = export_albef_state_dict(converted)
    kept = {k: v for k, v in original.items() if expected_name(k) is not None}
    assert set(back) == set(kept)
    for key, value in kept.items():
        assert back[key].shape == value.shape and torch.equal(back[key], value), key


def test_the_converted_weights_fill_the_model_exactly(tmp_path):
    original = albef_state_dict()
    path = tmp_path / "albef.safetensors"
    save_file({k: v.clone().contiguous() for k, v in original.items()}, path)  # safetensors: no shared storage
    tokenizer_dir = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(tokenizer_dir)
    summary = convert_checkpoint(path, tmp_path / "out", str(tokenizer_dir), num_attention_heads=4,
                                 vision_num_attention_heads=4)
    assert summary["model_class"] == "CosmoForPreTraining"
    # Dropped: the momentum copies, the queues, and BERT's position-id buffer (under text_encoder).
    assert summary["dropped"] == sorted(["image_queue", "idx_queue", "queue_ptr", "text_encoder", "text_encoder_m",
                                         "text_proj_m", "text_queue", "vision_proj_m", "visual_encoder_m"])
    model = CosmoForPreTraining.from_pretrained(tmp_path / "out").eval()
    config = model.config
    assert (config.text_config.fusion_layer, config.text_config.num_hidden_layers, config.vision_config.image_size,
            config.vision_config.patch_size, config.embed_dim) == (2, 4, 32, 8, 16)
    state = model.state_dict()
    for key, value in original.items():
        if (name := expected_name(key)) is not None:
            torch.testing.assert_close(state[name].reshape(value.shape), value.float(), msg=key)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "out").vocab, dict)
    assert AutoImageProcessor.from_pretrained(tmp_path / "out").size == {"height": 32, "width": 32}
    assert torch.isfinite(model(**random_batch(2, 6)).itm_logits).all()


def test_a_retrieval_checkpoint_gives_a_retrieval_model(tmp_path):
    original = albef_state_dict(momentum=False, retrieval=True)
    path = tmp_path / "retrieval.safetensors"
    save_file({k: v.clone().contiguous() for k, v in original.items()}, path)  # safetensors: no shared storage
    summary = convert_checkpoint(path, tmp_path / "out", num_attention_heads=4, vision_num_attention_heads=4)
    assert summary["model_class"] == "CosmoForImageTextRetrieval"
    model = CosmoForImageTextRetrieval.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(model.text_model.embeddings.word_embeddings.weight,
                               original["text_encoder.embeddings.word_embeddings.weight"])
    assert type(CosmoModel.from_pretrained(tmp_path / "out")) is CosmoModel


def test_pickles_are_refused_without_allow_pickle_and_read_weights_only_with_it(tmp_path):
    path = tmp_path / "albef.pth"
    torch.save({"model": albef_state_dict(), "config": {"image_res": 32}, "epoch": 3}, path)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_original_state_dict(path)
    state = load_original_state_dict(path, allow_pickle=True)
    assert "visual_encoder.cls_token" in state

    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        load_original_state_dict(evil, allow_pickle=True)


def test_unknown_keys_are_an_error():
    original = albef_state_dict(momentum=False) | {"some_new_head.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="some_new_head"):
        convert_albef_state_dict(original)


def test_command_line(tmp_path):
    path = tmp_path / "albef.pth"
    torch.save({"model": albef_state_dict()}, path)
    command = [sys.executable, "-m", "modeling_cosmo.convert_albef_original_to_hf", "--checkpoint", str(path),
               "--output_dir", str(tmp_path / "out"), "--num_attention_heads", "4",
               "--vision_num_attention_heads", "4"]
    refused = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert refused.returncode != 0 and "allow_pickle" in refused.stderr
    done = subprocess.run(command + ["--allow_pickle"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["model_class"] == "CosmoForPreTraining"
    assert (tmp_path / "out" / "model.safetensors").exists()
