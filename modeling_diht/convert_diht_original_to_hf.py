"""Convert an original DiHT checkpoint into a transformers model folder.

DiHT: Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280. Official weights: github.com/facebookresearch/diht (CC BY-NC 4.0), files named
`diht_vitb16_224px_<sha256>.ckpt` etc.

The official checkpoints are plain `state_dict`s in OpenAI-CLIP naming (`transformer.resblocks.{i}.attn.in_proj_weight`,
`visual.conv1.weight`, `text_projection`, ...), the naming open_clip uses too. This script renames them to
`transformers.CLIPModel`'s parameter names (which `DiHTModel` keeps), splits the fused attention input projections
into q/k/v, transposes the two projections, checks every key and shape against the chosen architecture, and writes
a folder that `AutoModel`, `AutoTokenizer`, `AutoImageProcessor` and `AutoProcessor` load:

    python -m modeling_diht.convert_diht_original_to_hf \\
        --checkpoint diht_vitb16_224px_<sha256>.ckpt --model_name diht_vitb16_224px \\
        --output_dir diht-vitb16-224px --allow_pickle

The model card and the Hub upload are `hub_cards`' (a layer above the models), in one command on the folder:

    python -m hub_cards.push --folder diht-vitb16-224px --repo_id me/diht-vitb16-224px --license cc-by-nc-4.0 \
        --results_json outputs/zero_shot/results.json      # --dry_run: write the card, list the files

The `.ckpt` files are pickles. Nothing is unpickled unless `--allow_pickle` is given, and then only through
`torch.load(weights_only=True)`, which accepts tensors and plain containers and refuses any other object (so a
malicious file cannot run code). `.safetensors` files need no option.

The tokenizer is OpenAI CLIP's BPE, rebuilt from `bpe_simple_vocab_16e6.txt.gz` (shipped inside the
`open_clip_torch` wheel, or given with `--bpe_path`) by `processing_diht.build_tokenizer`; nothing is downloaded.

This file imports only torch, safetensors, transformers' public API and its siblings; open_clip is not imported, only
located on disk to find its BPE file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file as load_safetensors
from transformers import CLIPProcessor, HfArgumentParser
from transformers import __version__ as transformers_version

from .configuration_diht import DIHT_PRESETS, DiHTConfig
from .modeling_diht import DiHTModel
from .processing_diht import BPE_FILENAME, build_image_processor, build_tokenizer

# Entries of OpenAI-style state dicts that are not weights: the JIT archives store the model's hyper-parameters as
# tensors, and `attn_mask` is the causal mask, rebuilt from the config by every implementation.
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")  # training checkpoints nest the weights
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_PICKLE_HINT = (
    "Original DiHT .ckpt files are pickles. Pass allow_pickle=True (command line: --allow_pickle) to load them with "
    "torch.load(weights_only=True), which reads tensors and plain containers only and refuses any other object, so "
    "the file cannot run code."
)
_MAX_LISTED = 12  # keys listed per problem in an error message; the rest are counted


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the requested DiHT architecture.

    Attributes:
        missing: original-naming keys the architecture needs and the checkpoint lacks.
        unexpected: checkpoint keys that are no DiHT weight.
        mismatched: `(original key, checkpoint shape, expected shape)` for every weight of the wrong shape.
        suggested_preset: the preset whose keys and shapes the checkpoint matches exactly, if one does.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        suggested_preset: str | None,
    ):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        self.suggested_preset = suggested_preset


# --------------------------------------------------------------------------------------------------------------------
# Reading the original file
# --------------------------------------------------------------------------------------------------------------------


def load_original_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read the weights of an original DiHT (or OpenAI CLIP / open_clip) checkpoint.

    A safetensors file (recognised by its content, whatever its suffix) is read directly. Anything else is taken
    for a `torch.save` pickle (`.ckpt`, `.pt`, `.pth`, `.bin`) and is refused unless `allow_pickle=True`; it is then
    read with `torch.load(weights_only=True)`, which cannot run code from the file. Containers are unwrapped
    (`{"state_dict": ...}`, `{"model": ...}`, `{"module": ...}`), a `module.` (DDP) or `_orig_mod.` (torch.compile)
    prefix is removed, and entries that are not weights (`input_resolution`, `context_length`, `vocab_size`,
    `attn_mask`) are dropped.

    Args:
        path: the checkpoint file.
        allow_pickle: permit reading a pickle file with `torch.load(weights_only=True)`.

    Returns:
        Original parameter names to tensors, on CPU.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a pickle without `allow_pickle`, a pickle holding objects other than tensors, or a file that
            holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist or is not a file")
    if _is_safetensors(path):
        try:
            obj = load_safetensors(str(path), device="cpu")
        except Exception as error:  # SafetensorError: a header or data region that does not add up
            raise ValueError(f"{str(path)!r} is truncated or corrupted: {error}") from error
    elif path.suffix == ".safetensors":
        raise ValueError(f"{str(path)!r} is not a valid safetensors file (truncated or incomplete download?)")
    else:
        if not allow_pickle:
            raise ValueError(f"{str(path)!r} is not a safetensors file and would have to be unpickled. {_PICKLE_HINT}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # UnpicklingError for foreign objects, RuntimeError for a truncated zip archive
            raise ValueError(
                f"Could not read {str(path)!r} with torch.load(weights_only=True): the file is truncated, not a "
                f"PyTorch checkpoint, or holds objects other than tensors (only plain state dicts are accepted). "
                f"torch.load said: {error}"
            ) from error

    state_dict = _unwrap_container(obj, path)
    state_dict = _strip_wrapper_prefixes(state_dict)
    state_dict = {key: value for key, value in state_dict.items() if not _is_metadata_key(key)}
    not_tensors = sorted(key for key, value in state_dict.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{str(path)!r}: entries that are not tensors: {_listing(not_tensors)}")
    if not state_dict:
        raise ValueError(f"{str(path)!r} holds no weights")
    return state_dict


def _is_safetensors(path: Path) -> bool:
    # safetensors layout: an 8-byte little-endian header length, then a JSON header starting with "{".
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 8 + header_length <= path.stat().st_size


def _unwrap_container(obj: object, path: Path) -> dict:
    while isinstance(obj, dict) and not all(isinstance(value, torch.Tensor) for value in obj.values()):
        inner = next((obj[key] for key in _CONTAINER_KEYS if isinstance(obj.get(key), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict")
    return obj


def _strip_wrapper_prefixes(state_dict: dict) -> dict:
    for prefix in _WRAPPER_PREFIXES:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def _is_metadata_key(key: str) -> bool:
    return key in METADATA_KEYS or key == "attn_mask" or key.endswith(".attn_mask")


# --------------------------------------------------------------------------------------------------------------------
# Renaming
# --------------------------------------------------------------------------------------------------------------------


class _Entry(NamedTuple):
    """How one original tensor becomes one or more `CLIPModel` tensors."""

    shape: tuple[int, ...]  # expected shape in the original checkpoint
    targets: tuple[tuple[str, tuple[int, ...]], ...]  # (CLIPModel key, shape)
    kind: str  # "copy", "transpose" or "split_qkv"


def _conversion_plan(config: DiHTConfig) -> dict[str, _Entry]:
    """Every original key the architecture needs, with its shape and its CLIPModel target(s)."""
    text, vision, embed = config.text_config, config.vision_config, config.projection_dim
    num_patches = (vision.image_size // vision.patch_size) ** 2
    plan: dict[str, _Entry] = {}

    def add(source: str, shape: tuple[int, ...], target: str, kind: str = "copy") -> None:
        target_shape = tuple(reversed(shape)) if kind == "transpose" else shape
        plan[source] = _Entry(shape, ((target, target_shape),), kind)

    def add_layer_norm(source: str, target: str, width: int) -> None:
        for name in ("weight", "bias"):
            add(f"{source}.{name}", (width,), f"{target}.{name}")

    def add_blocks(source: str, target: str, width: int, intermediate: int, layers: int) -> None:
        for i in range(layers):
            src, tgt = f"{source}.resblocks.{i}", f"{target}.layers.{i}"
            # nn.MultiheadAttention stacks W_q, W_k, W_v along dim 0 of in_proj_weight: (3W, W)
            for name, shape in (("weight", (width, width)), ("bias", (width,))):
                targets = tuple((f"{tgt}.self_attn.{p}_proj.{name}", shape) for p in "qkv")
                plan[f"{src}.attn.in_proj_{name}"] = _Entry((3 * width, *shape[1:]), targets, "split_qkv")
            add(f"{src}.attn.out_proj.weight", (width, width), f"{tgt}.self_attn.out_proj.weight")
            add(f"{src}.attn.out_proj.bias", (width,), f"{tgt}.self_attn.out_proj.bias")
            add_layer_norm(f"{src}.ln_1", f"{tgt}.layer_norm1", width)
            add_layer_norm(f"{src}.ln_2", f"{tgt}.layer_norm2", width)
            add(f"{src}.mlp.c_fc.weight", (intermediate, width), f"{tgt}.mlp.fc1.weight")
            add(f"{src}.mlp.c_fc.bias", (intermediate,), f"{tgt}.mlp.fc1.bias")
            add(f"{src}.mlp.c_proj.weight", (width, intermediate), f"{tgt}.mlp.fc2.weight")
            add(f"{src}.mlp.c_proj.bias", (width,), f"{tgt}.mlp.fc2.bias")

    w = text.hidden_size
    add("token_embedding.weight", (text.vocab_size, w), "text_model.embeddings.token_embedding.weight")
    add("positional_embedding", (text.max_position_embeddings, w), "text_model.embeddings.position_embedding.weight")
    add_blocks("transformer", "text_model.encoder", w, text.intermediate_size, text.num_hidden_layers)
    add_layer_norm("ln_final", "text_model.final_layer_norm", w)
    add("text_projection", (w, embed), "text_projection.weight", "transpose")  # used as x @ P; Linear wants P.T

    w = vision.hidden_size
    add("visual.class_embedding", (w,), "vision_model.embeddings.class_embedding")
    add("visual.positional_embedding", (num_patches + 1, w), "vision_model.embeddings.position_embedding.weight")
    add(
        "visual.conv1.weight",
        (w, vision.num_channels, vision.patch_size, vision.patch_size),
        "vision_model.embeddings.patch_embedding.weight",
    )
    add_layer_norm("visual.ln_pre", "vision_model.pre_layrnorm", w)
    add_blocks("visual.transformer", "vision_model.encoder", w, vision.intermediate_size, vision.num_hidden_layers)
    add_layer_norm("visual.ln_post", "vision_model.post_layernorm", w)
    add("visual.proj", (w, embed), "visual_projection.weight", "transpose")

    add("logit_scale", (), "logit_scale")
    return plan


def _canonical_names(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bring the naming variants of open_clip to OpenAI's naming, and drop metadata entries."""
    # open_clip's CustomTextCLIP keeps the text tower under `text.` (`text.transformer...`, `text.ln_final`)
    canonical = {
        key.removeprefix("text."): value for key, value in original.items() if not _is_metadata_key(key)
    }
    # open_clip text towers built as nn.Linear store the projection as `text_projection.weight` = P.T
    if "text_projection.weight" in canonical and "text_projection" not in canonical:
        canonical["text_projection"] = canonical.pop("text_projection.weight").t()
    if "logit_scale" in canonical and canonical["logit_scale"].numel() == 1:
        canonical["logit_scale"] = canonical["logit_scale"].reshape(())  # some exports store the scalar as (1,)
    return canonical


def infer_preset(original: dict[str, torch.Tensor]) -> str | None:
    """Recognise which released DiHT architecture a checkpoint has, from its keys and shapes.

    Args:
        original: a state dict in OpenAI-CLIP / open_clip naming (as `load_original_state_dict` returns it).

    Returns:
        The preset name (`diht_vitb32_224px`, `diht_vitb16_224px`, `diht_vitl14_224px`, `diht_vitl14_336px`) whose
        keys and shapes all match, or `None` (another architecture, or an incomplete checkpoint). Head counts cannot
        be read from shapes; the presets' (64-dimensional heads) are assumed.
    """
    canonical = _canonical_names(original)
    for name in DIHT_PRESETS:
        plan = _conversion_plan(DiHTConfig.from_preset(name))
        if canonical.keys() == plan.keys() and all(
            tuple(canonical[key].shape) == entry.shape for key, entry in plan.items()
        ):
            return name
    return None


def convert_state_dict(original: dict[str, torch.Tensor], config: DiHTConfig) -> dict[str, torch.Tensor]:
    """Rename an OpenAI-CLIP / open_clip state dict to `CLIPModel` (hence `DiHTModel`) names.

    `attn.in_proj_{weight,bias}` are split in three equal chunks along dim 0 into `self_attn.{q,k,v}_proj`;
    `text_projection` and `visual.proj` (applied as `x @ P`) become `Linear` weights `P.T`; `ln_1/ln_2/ln_final/
    ln_pre/ln_post`, `mlp.c_fc/c_proj`, `conv1`, the embeddings and `logit_scale` are renamed. open_clip's variants
    (a `text.` tower prefix, a `Linear` text projection) are accepted. Metadata entries (`input_resolution`,
    `context_length`, `vocab_size`, `attn_mask`) are ignored. Concept-distillation heads are not part of original
    checkpoints and are not produced.

    Args:
        original: original parameter names to tensors.
        config: the target architecture.

    Returns:
        `CLIPModel` parameter names to tensors (contiguous, not sharing storage with one another).

    Raises:
        CheckpointMismatchError: missing keys, unknown keys or wrong shapes; the message names every offending key
            (up to a dozen per kind, the rest counted), the shapes, and the preset that fits the checkpoint, if any.
    """
    canonical = _canonical_names(original)
    plan = _conversion_plan(config)
    missing = [key for key in plan if key not in canonical]
    unexpected = sorted(key for key in canonical if key not in plan)
    mismatched = [
        (key, tuple(canonical[key].shape), entry.shape)
        for key, entry in plan.items()
        if key in canonical and tuple(canonical[key].shape) != entry.shape
    ]
    if missing or unexpected or mismatched:
        suggested = infer_preset(original)
        message = _describe_mismatch(config, plan, missing, unexpected, mismatched, suggested)
        raise CheckpointMismatchError(
            message, missing=missing, unexpected=unexpected, mismatched=mismatched, suggested_preset=suggested
        )

    converted: dict[str, torch.Tensor] = {}
    for key, entry in plan.items():
        tensor = canonical[key]
        if entry.kind == "split_qkv":
            for (target, _), chunk in zip(entry.targets, tensor.chunk(3, dim=0)):
                converted[target] = chunk.clone()  # (W, W) or (W,); clone so q/k/v do not share storage
        elif entry.kind == "transpose":
            converted[entry.targets[0][0]] = tensor.t().contiguous()  # (W, E) -> (E, W)
        else:
            converted[entry.targets[0][0]] = tensor.contiguous()
    return converted


def _describe_config(config: DiHTConfig) -> str:
    text, vision = config.text_config, config.vision_config
    return (
        f"text {text.num_hidden_layers} layers x {text.hidden_size}, vision {vision.num_hidden_layers} layers x "
        f"{vision.hidden_size} with patch {vision.patch_size} at {vision.image_size} px, "
        f"embedding {config.projection_dim}"
    )


def _describe_mismatch(
    config: DiHTConfig,
    plan: dict[str, _Entry],
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    suggested: str | None,
) -> str:
    lines = [f"The checkpoint does not fit the requested architecture ({_describe_config(config)}):"]
    if mismatched:
        lines.append(f"- {len(mismatched)} weights have the wrong shape (a checkpoint of another architecture?):")
        for key, actual, expected in mismatched[:_MAX_LISTED]:
            target = plan[key].targets[0][0]
            lines.append(f"    {key} (-> {target}): checkpoint {actual}, expected {expected}")
        if len(mismatched) > _MAX_LISTED:
            lines.append(f"    ... and {len(mismatched) - _MAX_LISTED} more")
    if missing:
        lines.append(f"- {len(missing)} weights are missing (a truncated or partial checkpoint?): {_listing(missing)}")
    if unexpected:
        lines.append(f"- {len(unexpected)} keys are not DiHT weights: {_listing(unexpected)}")
    if suggested is not None:
        lines.append(
            f"The checkpoint's keys and shapes match the preset {suggested!r}: convert it with "
            f"--model_name {suggested} (or DiHTConfig.from_preset({suggested!r}))."
        )
    return "\n".join(lines)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


# --------------------------------------------------------------------------------------------------------------------
# Whole conversion
# --------------------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_checkpoint(
    checkpoint_path: str | Path,
    model_name: str | None,
    output_dir: str | Path,
    *,
    bpe_path: str | Path | None = None,
    allow_pickle: bool = False,
    config: DiHTConfig | None = None,
) -> Path:
    """Convert an original DiHT checkpoint into a folder that transformers' Auto classes load.

    Writes `config.json` (with the `auto_map` for remote code), `model.safetensors`, the modelling code, the
    tokenizer files, `preprocessor_config.json`, `processor_config.json` and `conversion_summary.json` (source file,
    its SHA-256, preset, tensor and parameter counts).

    Args:
        checkpoint_path: the original `.ckpt` (pickle; needs `allow_pickle`) or a `.safetensors` file.
        model_name: one of `DIHT_PRESETS`; `None` recognises it from the checkpoint's shapes (`infer_preset`).
        output_dir: the folder to write (created if needed).
        bpe_path: OpenAI's `bpe_simple_vocab_16e6.txt.gz`; defaults to the copy inside open_clip.
        allow_pickle: permit unpickling a `.ckpt` with `torch.load(weights_only=True)`.
        config: an explicit configuration, used instead of the preset (non-released architectures, tests).

    Returns:
        The output folder.

    Raises:
        CheckpointMismatchError: the checkpoint does not fit the architecture.
        ValueError: the file's SHA-256 differs from the one in its official file name, a pickle without
            `allow_pickle`, or an architecture that cannot be recognised.
    """
    checkpoint_path, output_dir = Path(checkpoint_path), Path(output_dir)
    original = load_original_state_dict(checkpoint_path, allow_pickle=allow_pickle)
    digest = _sha256(checkpoint_path)
    # Official files are named `<preset>_<sha256 of the file>.ckpt`; a different hash means a corrupted download.
    named = re.search(r"_([0-9a-f]{64})\.[A-Za-z]+$", checkpoint_path.name)
    if named and named.group(1) != digest:
        raise ValueError(
            f"{checkpoint_path.name}: the file's SHA-256 is {digest}, not the {named.group(1)} its name promises; "
            "the download is corrupted or incomplete."
        )

    if config is None:
        if model_name is None:
            model_name = infer_preset(original)
            if model_name is None:
                raise ValueError(
                    f"Could not recognise the architecture of {checkpoint_path.name}; pass model_name= "
                    f"(command line: --model_name, one of {sorted(DIHT_PRESETS)}) or a config."
                )
            print(f"Recognised the architecture as {model_name}")
        config = DiHTConfig.from_preset(model_name)

    converted = convert_state_dict(original, config)
    model = DiHTModel(config)
    incompatible = model.load_state_dict(converted, strict=False)
    not_loaded = [key for key in incompatible.missing_keys if not key.startswith("concept_heads.")]
    if not_loaded or incompatible.unexpected_keys:  # convert_state_dict and DiHTModel disagree: a bug, not bad input
        raise RuntimeError(
            f"Converted weights do not fit DiHTModel: missing {not_loaded}, unexpected {incompatible.unexpected_keys}"
        )
    if config.concept_heads:
        print(f"Concept heads {sorted(config.concept_heads)} are not in original checkpoints: randomly initialised")
    model.eval()

    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer = build_tokenizer(bpe_path)
    image_processor = build_image_processor(config.vision_config.image_size)
    # The processor writes the tokenizer files and processor_config.json; preprocessor_config.json is written too,
    # for tools that read the image processor's own file.
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output_dir)
    image_processor.save_pretrained(output_dir)

    summary = {
        "source_file": checkpoint_path.name,
        "source_sha256": digest,
        "model_name": model_name,
        "num_tensors": len(original),
        "num_parameters": sum(tensor.numel() for tensor in converted.values()),
        "logit_scale": float(model.logit_scale.detach().exp()),
        "image_size": config.vision_config.image_size,
        "transformers_version": transformers_version,
    }
    (output_dir / "conversion_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"Converted {summary['num_tensors']} tensors ({summary['num_parameters'] / 1e6:.1f}M parameters) of "
        f"{checkpoint_path.name} [{model_name or 'custom config'}, {_describe_config(config)}, logit scale "
        f"{summary['logit_scale']:.2f}] to {output_dir}"
    )
    return output_dir


@dataclass
class ConversionArguments:
    """The converter's command line (see the module docstring)."""

    checkpoint: str = field(metadata={"help": "The original .ckpt (a pickle) or .safetensors file."})
    output_dir: str = field(metadata={"help": "The folder to write the converted model into."})
    model_name: str | None = field(default=None, metadata={
        "help": "The released architecture of the checkpoint (default: recognised from its shapes).",
        "choices": sorted(DIHT_PRESETS)})
    config_json: str | None = field(default=None, metadata={
        "help": "A DiHTConfig JSON file (e.g. a converted model's config.json) instead of a preset."})
    bpe_path: str | None = field(default=None, metadata={
        "help": f"OpenAI CLIP's {BPE_FILENAME} (default: the copy inside the installed open_clip_torch)."})
    allow_pickle: bool = field(default=False, metadata={
        "help": "Original DiHT .ckpt files are pickles: allow reading them with torch.load(weights_only=True), which "
                "reads tensors only and refuses any other object (no code from the file can run)."})


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    (args,) = HfArgumentParser(ConversionArguments).parse_args_into_dataclasses(args=argv)
    if args.model_name and args.config_json:
        raise SystemExit("error: give --model_name or --config_json, not both")
    try:
        config = DiHTConfig.from_json_file(args.config_json) if args.config_json else None
        convert_checkpoint(args.checkpoint, args.model_name, args.output_dir, bpe_path=args.bpe_path,
                           allow_pickle=args.allow_pickle, config=config)
    except (FileNotFoundError, ValueError) as error:  # bad input: a message, not a traceback
        raise SystemExit(f"error: {error}") from error
    return 0


if __name__ == "__main__":
    main()
