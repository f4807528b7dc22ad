"""Convert an original ALBEF / GRIT-VLP / COSMO (MAFA) checkpoint into a transformers COSMO folder.

ALBEF (Li et al., arXiv 2107.07651; github.com/salesforce/ALBEF), GRIT-VLP (Byun et al., arXiv 2208.04060) and
COSMO / MAFA (Byun, Kim and Moon, arXiv 2312.06112; github.com/jaeseokbyun/MAFA) save `torch.save({"model":
state_dict, ...})` pickles whose state dict names the modules of their `models/vit.py` and `models/xbert.py`:

* `visual_encoder.{cls_token, pos_embed, patch_embed.proj.*, blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
  mlp.fc2}.*, norm.*}`: a timm ViT; COSMO's image encoder keeps these names, so they map one to one;
* `text_encoder.bert.{embeddings.*, encoder.layer.{i}.*}` (BERT names; the fusion layers add `crossattention.*`) and
  `text_encoder.cls.predictions.*` (the MLM head) in pre-training checkpoints; retrieval fine-tuned ones have a
  `BertModel` as `text_encoder.{embeddings, encoder}.*` and no MLM head;
* `vision_proj.*`, `text_proj.*`, `itm_head.*`, `temp` (0-dim).

Dropped, with a note: ALBEF's momentum copies (`visual_encoder_m.*`, `text_encoder_m.*`, `vision_proj_m.*`,
`text_proj_m.*`), the queues (`image_queue`, `text_queue`, `idx_queue`, `queue_ptr`), BERT's unused pooler and
position-id buffers. Any other key is an error. The architecture is read off the tensor shapes (layers, widths,
`fusion_layer`, patch size, resolution); only the numbers of attention heads (12) cannot be, and are options.

    python -m modeling_cosmo.convert_albef_original_to_hf --checkpoint mafa_pretrain_4m.pth \\
        --output_dir cosmo-vitb16-256px --tokenizer_name_or_path bert-base-uncased --allow_pickle

The `.pth` files are pickles: nothing is unpickled unless `--allow_pickle` is given, and then only by
`torch.load(weights_only=True)`, which reads tensors and plain containers and refuses other objects. `.safetensors`
files need no option. The output folder holds `model.safetensors`, `config.json` (with `auto_map` and the modeling
files for remote code), the BERT tokenizer and the image processor (256 px bicubic resize, CLIP mean/std).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from transformers import AutoTokenizer, HfArgumentParser

from .configuration_cosmo import CosmoConfig
from .modeling_cosmo import CosmoForImageTextRetrieval, CosmoForPreTraining, CosmoModel
from .processing_cosmo import cosmo_image_processor

_PICKLE_HINT = (
    "ALBEF / GRIT-VLP / MAFA .pth checkpoints are pickles. Pass allow_pickle=True (command line: --allow_pickle) to "
    "read them with torch.load(weights_only=True), which accepts tensors and plain containers only and refuses any "
    "other object, so the file cannot run code."
)
_CONTAINER_KEYS = ("model", "state_dict", "module")
_DROPPED = re.compile(
    r"^(visual_encoder_m|text_encoder_m|vision_proj_m|text_proj_m)\."  # momentum encoder (ALBEF §3.3)
    r"|^(image_queue|text_queue|idx_queue|queue_ptr)$"  # queues of momentum features
    r"|\.pooler\.|\.position_ids$"  # BERT's pooler (unused by ALBEF) and its position-id buffer
)


def load_original_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read an original checkpoint: a `.safetensors` file, or a pickle only with `allow_pickle`.

    Args:
        path: the checkpoint file.
        allow_pickle: permit reading a pickle with `torch.load(weights_only=True)`.

    Returns:
        The state dict (unwrapped from `{"model": ...}`, the `module.` prefix of DistributedDataParallel removed).

    Raises:
        ValueError: a pickle without `allow_pickle`, or a file that holds no state dict.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    is_safetensors = len(head) >= 9 and head[8:9] == b"{"  # 8-byte header length, then the JSON header
    if is_safetensors:
        state = load_safetensors(str(path))
    else:
        if not allow_pickle:
            raise ValueError(f"{str(path)!r} is not a safetensors file. {_PICKLE_HINT}")
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in _CONTAINER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _albef_to_cosmo_name(key: str) -> str | None:
    """COSMO's name of an original key, `None` for a dropped one; raises for an unknown key."""
    if _DROPPED.search(key):
        return None
    if key.startswith("visual_encoder."):
        return "vision_model." + key[len("visual_encoder."):]
    if key.startswith("text_encoder.cls."):
        return "mlm_head." + key[len("text_encoder.cls."):]
    if key.startswith("text_encoder.bert."):
        return "text_model." + key[len("text_encoder.bert."):]
    if key.startswith(("text_encoder.embeddings.", "text_encoder.encoder.")):  # retrieval fine-tuned: a BertModel
        return "text_model." + key[len("text_encoder."):]
    if key == "temp" or key.startswith(("vision_proj.", "text_proj.", "itm_head.")):
        return key
    raise ValueError(f"unknown key in an ALBEF-family checkpoint: {key!r}")


def convert_albef_state_dict(original: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an ALBEF / GRIT-VLP / MAFA state dict to COSMO's parameter names.

    Returns:
        `(converted state dict, dropped original keys)`; `temp` becomes a one-element tensor.
    """
    converted, dropped = {}, []
    for key, value in original.items():
        name = _albef_to_cosmo_name(key)
        if name is None:
            dropped.append(key)
        else:
            converted[name] = value.reshape(1) if name == "temp" else value
    return converted, dropped


def export_albef_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `convert_albef_state_dict` (pre-training layout: `text_encoder.bert.*`, `text_encoder.cls.*`),
    e.g. to evaluate COSMO weights with the original code (which re-creates the momentum encoder and queues)."""
    exported = {}
    for name, value in state_dict.items():
        if name.startswith("vision_model."):
            key = "visual_encoder." + name[len("vision_model."):]
        elif name.startswith("text_model."):
            key = "text_encoder.bert." + name[len("text_model."):]
        elif name.startswith("mlm_head."):
            key = "text_encoder.cls." + name[len("mlm_head."):]
        else:
            key = name
        exported[key] = value.reshape(()) if name == "temp" else value
    return exported


def config_from_state_dict(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int = 12, vision_num_attention_heads: int = 12
) -> CosmoConfig:
    """The COSMO configuration of a converted state dict, read off its shapes.

    Args:
        state_dict: COSMO-named weights (`convert_albef_state_dict`'s output).
        num_attention_heads: heads of the text and fusion layers (not visible in the weights; BERT-base: 12).
        vision_num_attention_heads: heads of the image encoder (ViT-B: 12).
    """
    def count(pattern: str) -> int:
        return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})

    text_layers = count(r"text_model\.encoder\.layer\.(\d+)\.")
    cross = re.compile(r"text_model\.encoder\.layer\.(\d+)\.crossattention\.")
    fusion = [int(m.group(1)) for k in state_dict if (m := cross.match(k))]
    patch = state_dict["vision_model.patch_embed.proj.weight"]
    num_patches = state_dict["vision_model.pos_embed"].shape[1] - 1
    grid = int(round(num_patches**0.5))
    words = state_dict["text_model.embeddings.word_embeddings.weight"]
    return CosmoConfig(
        text_config={
            "vocab_size": words.shape[0],
            "hidden_size": words.shape[1],
            "num_hidden_layers": text_layers,
            "num_attention_heads": num_attention_heads,
            "intermediate_size": state_dict["text_model.encoder.layer.0.intermediate.dense.weight"].shape[0],
            "max_position_embeddings": state_dict["text_model.embeddings.position_embeddings.weight"].shape[0],
            "type_vocab_size": state_dict["text_model.embeddings.token_type_embeddings.weight"].shape[0],
            "fusion_layer": min(fusion) if fusion else text_layers,
        },
        vision_config={
            "hidden_size": patch.shape[0],
            "num_hidden_layers": count(r"vision_model\.blocks\.(\d+)\."),
            "num_attention_heads": vision_num_attention_heads,
            "intermediate_size": state_dict["vision_model.blocks.0.mlp.fc1.weight"].shape[0],
            "patch_size": patch.shape[-1],
            "image_size": grid * patch.shape[-1],
            "num_channels": patch.shape[1],
            "qkv_bias": "vision_model.blocks.0.attn.qkv.bias" in state_dict,
        },
        embed_dim=state_dict["vision_proj.weight"].shape[0],
    )


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    tokenizer_name_or_path: str | None = None,
    *,
    allow_pickle: bool = False,
    num_attention_heads: int = 12,
    vision_num_attention_heads: int = 12,
) -> dict:
    """Convert one checkpoint and write a transformers folder.

    Args:
        checkpoint_path: the original `.pth` (a pickle; needs `allow_pickle`) or a `.safetensors` file.
        output_dir: the folder to write.
        tokenizer_name_or_path: a BERT tokenizer folder or Hub id (the originals use `bert-base-uncased`), saved next
            to the weights; `None` writes no tokenizer.
        allow_pickle: permit unpickling with `torch.load(weights_only=True)`.
        num_attention_heads, vision_num_attention_heads: see `config_from_state_dict`.

    Returns:
        A summary: the model class written, the numbers of converted and dropped tensors, the dropped key groups.
    """
    original = load_original_state_dict(checkpoint_path, allow_pickle=allow_pickle)
    converted, dropped = convert_albef_state_dict(original)
    config = config_from_state_dict(converted, num_attention_heads, vision_num_attention_heads)
    if "mlm_head.predictions.transform.dense.weight" in converted:
        model_class = CosmoForPreTraining
        converted.setdefault("mlm_head.predictions.decoder.weight",
                             converted["text_model.embeddings.word_embeddings.weight"])
        converted.setdefault("mlm_head.predictions.decoder.bias", converted["mlm_head.predictions.bias"])
    else:
        model_class = CosmoForImageTextRetrieval if "itm_head.weight" in converted else CosmoModel
    model = model_class(config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"the checkpoint does not fill {model_class.__name__}: missing {sorted(missing)[:10]}, "
                         f"unexpected {sorted(unexpected)[:10]}")
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    cosmo_image_processor(config.vision_config.image_size).save_pretrained(output_dir)
    if tokenizer_name_or_path is not None:
        AutoTokenizer.from_pretrained(tokenizer_name_or_path).save_pretrained(output_dir)
    groups = sorted({re.split(r"[.]", key)[0] for key in dropped})
    summary = {"model_class": model_class.__name__, "converted_tensors": len(converted),
               "dropped_tensors": len(dropped), "dropped": groups, "output_dir": str(output_dir)}
    print(f"dropped {len(dropped)} tensors not used by COSMO (momentum encoder, queues, BERT pooler): {groups}")
    return summary


@dataclass
class ConversionArguments:
    checkpoint: str = field(metadata={"help": "Original ALBEF / GRIT-VLP / MAFA .pth (or .safetensors) file."})
    output_dir: str = field(metadata={"help": "Folder to write the transformers checkpoint to."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "BERT tokenizer folder or Hub id to save next to the weights (the originals use bert-base-uncased)."})
    allow_pickle: bool = field(default=False, metadata={
        "help": "The .pth files are pickles: allow reading them with torch.load(weights_only=True), which refuses "
                "anything but tensors and plain containers."})
    num_attention_heads: int = field(default=12, metadata={"help": "Attention heads of the text/fusion layers."})
    vision_num_attention_heads: int = field(default=12, metadata={"help": "Attention heads of the image encoder."})


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints a JSON summary."""
    (args,) = HfArgumentParser(ConversionArguments).parse_args_into_dataclasses(args=argv)
    try:
        summary = convert_checkpoint(args.checkpoint, args.output_dir, args.tokenizer_name_or_path,
                                     allow_pickle=args.allow_pickle, num_attention_heads=args.num_attention_heads,
                                     vision_num_attention_heads=args.vision_num_attention_heads)
    except (FileNotFoundError, ValueError) as error:  # bad input: a message, not a traceback
        raise SystemExit(f"error: {error}") from error
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
