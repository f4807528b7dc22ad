"""Loading what a training run starts from, with errors that name the file and say what to do.

A warm start (DiHT, Radenovic et al., arXiv 2301.02280, trains from CLIP-style checkpoints as well as from scratch)
reads a checkpoint folder or Hub repository, its tokenizer and image processor, a frozen teacher for concept
distillation (Sec. 3.2), and, when a run resumes, a Trainer checkpoint. Each can be damaged or absent; the libraries
underneath then raise from deep inside (safetensors, json, huggingface_hub, timm) without saying which file or what
to do. The functions here check local files first and raise `LoadError`, whose one-line message names the file or
name, what is wrong with it and what to do; `examples/pretrain.py` prints it as `error: ...` and exits.

- `load_pretrained_model`: `from_pretrained` for the recipes' models, and the warm-start rule for weights the
  checkpoint does not provide (see the function, and "Warm starts" in `docs/choices.md`);
- `load_tokenizer`, `load_image_processor`: the Auto classes, without the source folder's remote-code `auto_map`
  (the library never writes one for them, so a saved run must not carry a pointer to code it did not ship);
- `resume_checkpoint`: the checkpoint folder `Trainer.train(resume_from_checkpoint=...)` will read, checked;
- `load_timm_model`: a timm model by name with its pretrained weights (a concept teacher);
- `sequential_zero3_gathers_on_cpu`: DeepSpeed ZeRO-3 gathers that are safe on CPU, for loading, training and saving;
- `whole_under_zero3`: load a frozen model that DeepSpeed does not wrap (COSMO's discriminator) unpartitioned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedModel
from transformers.trainer_utils import get_last_checkpoint

logger = logging.getLogger(__name__)

__all__ = [
    "LoadError",
    "load_image_processor",
    "load_pretrained_model",
    "load_timm_model",
    "load_tokenizer",
    "new_concept_head_keys",
    "resume_checkpoint",
    "sequential_zero3_gathers_on_cpu",
    "whole_under_zero3",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TRAINER_STATE_NAME = "trainer_state.json"
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json")
PROCESSOR_NAME = "preprocessor_config.json"
SHOWN_KEYS = 6  # keys named in a one-line message; the full lists go to the log


class LoadError(OSError):
    """A checkpoint, tokenizer, image processor, Trainer checkpoint or teacher that cannot be loaded as given.

    The message is one line: the file or name, what is wrong, and what to do.
    """


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _key_list(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:SHOWN_KEYS])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else shown


def _local_folder(source: str | os.PathLike, what: str) -> Path | None:
    """The local folder `source` names; None for a Hub id; `LoadError` for a path that is not a folder.

    A Hub id is `name` or `owner/name`; a source with more than one `/`, a leading `.`, `~` or `/`, or a
    backslash can only be a path, so it is refused here instead of being looked up on the Hub.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise LoadError(f"{what} {text} is a file, not a folder: pass the folder that holds it")
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text:
        raise LoadError(f"{what} {text}: no such folder (relative to {Path.cwd()}); check the path")
    return None


def _read_json(path: Path, what: str, action: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        detail = "it is empty" if not path.read_bytes().strip() else _one_line(error)
        raise LoadError(f"{what}: {path} is not valid JSON ({detail}); {action}") from error


def _check_safetensors(path: Path, what: str, action: str) -> None:
    """Open `path`'s header: safetensors checks that the tensors it lists cover the file, so a truncated or
    overwritten file fails here, before any tensor is read."""
    if not path.is_file():
        raise LoadError(f"{what}: {path} is missing; {action}")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        detail = _one_line(error)
        raise LoadError(f"{what}: {path} is truncated or damaged (safetensors: {detail}); {action}") from error


def _check_weights(folder: Path, what: str, action: str) -> bool:
    """Check the safetensors weights of a folder (one file, or an index and its shards); False if it has none."""
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        content = _read_json(index, what, action)
        weight_map = content.get("weight_map") if isinstance(content, dict) else None
        if not isinstance(weight_map, dict):
            raise LoadError(f"{what}: {index} has no `weight_map`; {action}")
        for shard in sorted(set(weight_map.values())):
            _check_safetensors(folder / shard, what, action)
        return True
    if (folder / WEIGHTS_NAME).is_file():
        _check_safetensors(folder / WEIGHTS_NAME, what, action)
        return True
    return False


def new_concept_head_keys(source_config: Mapping[str, Any], config) -> set[str]:
    """The parameters of the concept heads that `config` declares and the source's config does not.

    A head is new when the source's `concept_head_sizes` has no head of that name, or one of another size (a new
    concept vocabulary): its weights start from `_init_weights`, as the heads of a model built from a config do
    (DiHT's concept distillation, arXiv 2301.02280 Sec. 3.2, trains them from the teacher's labels). A CLIP
    checkpoint declares no heads, so all of a DiHT model's heads are new on a warm start from CLIP.

    Args:
        source_config: the source's `config.json` as a dict.
        config: the configuration of the model being loaded (a `DiHTConfig`; any config without concept heads gives
            an empty set).
    """
    before = {name: size for name, size in (source_config.get("concept_head_sizes") or {}).items() if size}
    after = getattr(config, "concept_heads", None) or {}
    return {f"concept_heads.{name}.{part}" for name, size in after.items() if before.get(name) != size
            for part in ("weight", "bias")}


def load_pretrained_model(model_class: type[PreTrainedModel], source: str | os.PathLike, *,
                          allow_missing_weights: bool = False, what: str = "checkpoint",
                          **kwargs) -> PreTrainedModel:
    """`model_class.from_pretrained(source, **kwargs)` for a warm start, refusing weights left random by accident.

    The rule (`docs/choices.md`, "Warm starts"): after loading, every parameter and persistent buffer of the model
    must come from the checkpoint, except the *new* ones, which the run's configuration adds on purpose:
    `new_concept_head_keys` (DiHT's concept heads that the source does not have with that size). A key the
    checkpoint lacks, or holds with another shape, is *missing*; a key of the checkpoint that the model does not
    have, after transformers' own ignore list of the model class (e.g. the `position_ids` buffers older CLIP
    checkpoints saved), is *unexpected* and is logged (it loses nothing: a concept head the run replaced, say).
    Missing keys are an error unless `allow_missing_weights`, which trains them from their initialisation with a
    warning that lists them.

    Local folders are checked before loading: `config.json` must be JSON; every safetensors file (one, or the index
    and all its shards) must be whole. Any other failure of `from_pretrained` (a Hub id that cannot be fetched, a
    configuration of another architecture) is re-raised as `LoadError` with the source in its message.

    Args:
        model_class: e.g. `modeling_diht.DiHTModel`.
        source: a local folder or a Hub id.
        allow_missing_weights: train missing weights from their initialisation instead of refusing them.
        what: how the message names the source, e.g. `"--model_name_or_path"`.
        **kwargs: more arguments of `from_pretrained` (`attn_implementation`, config overrides such as
            `concept_head_sizes`).

    Returns:
        The model.

    Raises:
        LoadError: the source cannot be read, or weights are missing and `allow_missing_weights` is False.
    """
    sequential_zero3_gathers_on_cpu()  # before the model's parameters are created (partitioned) under ZeRO-3
    action = f"copy or download the checkpoint again, or pass another {what}"
    folder = _local_folder(source, what)
    label = f"{what} {source}"
    if folder is not None:
        if not (folder / CONFIG_NAME).is_file():
            raise LoadError(f"{label}: no {CONFIG_NAME} in {folder}, so it is not a transformers checkpoint folder "
                            "(a run of examples/pretrain.py writes one into <output_dir>/model)")
        source_config = _read_json(folder / CONFIG_NAME, label, action)
        if not isinstance(source_config, dict):
            raise LoadError(f"{label}: {folder / CONFIG_NAME} holds {type(source_config).__name__}, not a JSON "
                            f"object; {action}")
        if not _check_weights(folder, label, action):
            raise LoadError(f"{label}: {folder} holds no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME} with its shards); "
                            "this library loads safetensors weights only: convert .bin/.ckpt files first "
                            "(modeling_diht.convert_diht_original_to_hf)")
    try:
        # Shapes are compared below (a head resized on purpose is new; any other mismatch is a missing weight).
        model, info = model_class.from_pretrained(source, **{"ignore_mismatched_sizes": True, **kwargs,
                                                             "output_loading_info": True})
        if folder is None:
            source_config, _ = model_class.config_class.get_config_dict(source)
    except (OSError, ValueError, SafetensorError) as error:
        hint = ("check the name, the network, or HF_HUB_OFFLINE and the local cache" if folder is None
                else "check that the folder was written by save_pretrained")
        raise LoadError(f"{label} cannot be loaded ({_one_line(error)}); {hint}") from error
    new = new_concept_head_keys(source_config, model.config)
    mismatched = {entry[0] if isinstance(entry, (tuple, list)) else entry for entry in info.get("mismatched_keys", ())}
    missing = (set(info.get("missing_keys", ())) | mismatched) - new
    unexpected = set(info.get("unexpected_keys", ()))
    if new:
        logger.info("Warm start from %s: new weights %s start from their initialisation", source, _key_list(new))
    if unexpected:
        logger.warning("Warm start from %s: the checkpoint's %s are not used by %s", source, _key_list(unexpected),
                       model_class.__name__)
    if missing:
        logger.warning("Warm start from %s: missing %s", source, sorted(missing))
        shapes = f" ({len(mismatched - new)} of them with another shape)" if mismatched - new else ""
        message = (f"{label} lacks {len(missing)} weights of {model_class.__name__}{shapes}: {_key_list(missing)}"
                   + (f"; unexpected in it: {_key_list(unexpected)}" if unexpected else ""))
        if not allow_missing_weights:
            raise LoadError(f"{message}; they would train from random values: pass the matching checkpoint, or "
                            "allow it (--allow_missing_weights, or allow_missing_weights=True)")
        logger.warning("%s; training them from their initialisation (allow_missing_weights)", message)
    # Remote-code pointers of the source are not this library's: `save_pretrained` writes the model's own
    # `auto_map` (`register_for_auto_class`), and a source's entries could name code that the saved folder lacks.
    if getattr(model.config, "auto_map", None):
        model.config.auto_map = None
    return model


def load_tokenizer(source: str | os.PathLike, *, what: str = "tokenizer", **kwargs):
    """`AutoTokenizer.from_pretrained(source, **kwargs)` with checked files and without the source's `auto_map`.

    The `auto_map` of a source's `tokenizer_config.json` points at tokenizer code in that repository (remote code);
    kept, `save_pretrained` would write it into every folder the run saves, and a Hub push would publish a pointer
    to code it does not ship. The library loads the tokenizer's own (local) class, so the entry is dropped.

    Raises:
        LoadError: a tokenizer file is not valid JSON, or the source has no tokenizer.
    """
    folder = _local_folder(source, what)
    label = f"{what} {source}"
    if folder is not None:
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                _read_json(folder / name, label, f"save the tokenizer again, or pass another {what}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, TypeError) as error:
        raise LoadError(f"{label} cannot be loaded ({_one_line(error)}); pass a folder or Hub id with a "
                        "tokenizer (e.g. --tokenizer_name)") from error
    tokenizer.init_kwargs.pop("auto_map", None)
    return tokenizer


def load_image_processor(source: str | os.PathLike, *, what: str = "image processor", **kwargs):
    """`AutoImageProcessor.from_pretrained(source, **kwargs)` with a checked `preprocessor_config.json` and without
    the source's `auto_map` (see `load_tokenizer`).

    Raises:
        LoadError: `preprocessor_config.json` is missing or not valid JSON.
    """
    folder = _local_folder(source, what)
    label = f"{what} {source}"
    if folder is not None:
        path = folder / PROCESSOR_NAME
        if not path.is_file():
            raise LoadError(f"{label}: no {PROCESSOR_NAME} in {folder}; pass a folder that has one "
                            "(e.g. --image_processor_name)")
        _read_json(path, label, f"save the image processor again, or pass another {what}")
    try:
        processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    except (OSError, ValueError, TypeError) as error:
        raise LoadError(f"{label} cannot be loaded ({_one_line(error)}); pass a folder or Hub id with a "
                        f"{PROCESSOR_NAME} (e.g. --image_processor_name)") from error
    processor.__dict__.pop("auto_map", None)
    return processor


def resume_checkpoint(resume_from_checkpoint: str | os.PathLike | bool, output_dir: str | os.PathLike) -> str:
    """The Trainer checkpoint folder a resumed run reads, checked before `Trainer.train` reads it.

    `True` means the last `checkpoint-N` of `output_dir`. The folder must exist; `trainer_state.json` must be a JSON
    object; the model weights (safetensors) must be whole; every torch file (`optimizer.pt`, `scheduler.pt`,
    `rng_state*.pth`, ...) must be a complete zip archive (checked without unpickling anything).

    Raises:
        LoadError: naming the file, with the other checkpoints of `output_dir` to resume from instead.
    """
    if resume_from_checkpoint is True:
        folder = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
        if folder is None:
            raise LoadError(f"--resume_from_checkpoint: no checkpoint-N folder in {output_dir}; start without it, "
                            "or pass the folder of the checkpoint")
    else:
        folder = str(resume_from_checkpoint)
    path = Path(folder)
    others = sorted((p.name for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p != path),
                    key=lambda name: int(re.sub(r"\D", "", name) or 0)) if Path(output_dir).is_dir() else []
    action = ("resume from an earlier checkpoint (" + ", ".join(others) + f" in {output_dir})" if others
              else "start the run again without --resume_from_checkpoint")
    label = f"checkpoint {folder}"
    if not path.is_dir():
        raise LoadError(f"{label}: no such folder; {action}")
    state_file = path / TRAINER_STATE_NAME
    if not state_file.is_file():
        raise LoadError(f"{label}: no {TRAINER_STATE_NAME}, so it is not a Trainer checkpoint; {action}")
    state = _read_json(state_file, label, f"the checkpoint is damaged (an interrupted save?): {action}")
    if not isinstance(state, dict):
        raise LoadError(f"{label}: {state_file} holds {type(state).__name__}, not a JSON object; {action}")
    _check_weights(path, label, f"the checkpoint is damaged: {action}")
    for file in sorted([*path.glob("*.pt"), *path.glob("*.pth")]):
        try:
            with zipfile.ZipFile(file) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise LoadError(f"{label}: {file} is truncated or damaged ({_one_line(error)}); {action}") from error
    return folder


def load_timm_model(name: str, *, pretrained: bool = True, **kwargs):
    """`timm.create_model(name, pretrained=pretrained, **kwargs)`, e.g. a frozen concept teacher (arXiv 2301.02280,
    Sec. 3.2), with errors that say what to do when the name is unknown or its weights are not in the local cache.

    Raises:
        LoadError: timm does not know the name, or its pretrained weights cannot be fetched nor found locally.
    """
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise LoadError(f"timm model {name!r} does not exist ({_one_line(error)}); list the names with "
                            "`timm.list_models(pretrained=True)`") from error
        raise
    except OSError as error:  # huggingface_hub's LocalEntryNotFoundError and connection errors
        raise LoadError(f"timm model {name!r}: no pretrained weights in the local cache and none from the Hub "
                        f"({_one_line(error)}); download them once where the Hub is reachable (python -c \"import "
                        f"timm; timm.create_model('{name}', pretrained=True)\", cached under HF_HOME), or label the "
                        "concepts beforehand (examples/label_concepts.py) and train without --concept_teacher"
                        ) from error


def sequential_zero3_gathers_on_cpu(training_args=None) -> bool:
    """Make DeepSpeed ZeRO-3 gather parameters one at a time when it runs on CPU (`DS_ACCELERATOR=cpu`, gloo).

    DeepSpeed 0.19.7's coalesced ZeRO-3 gather (used to load a checkpoint into partitioned parameters, by
    `GatheredParameters`, and to gather the state dict that `Trainer.save_model` writes) starts one asynchronous
    all-gather per parameter and waits for the last only. On a GPU they run in order on one stream; on gloo each
    runs on its own thread, so the others' buffers may still hold uninitialised memory when read: random NaN
    losses, and loaded or saved weights that differ from run to run (fixed upstream in DeepSpeed pull request 8539,
    in a release that crashes on 0-dim parameters such as `logit_scale`). `stage3_allgather_sequential` waits for
    every gather. The setting is read when parameters are partitioned, so call this before the model is loaded
    (`load_pretrained_model` does) and before `deepspeed.initialize` (`ContrastiveTrainer` does). A value the user
    set is kept; nothing changes without ZeRO-3 or off CPU.

    Args:
        training_args: `TrainingArguments` whose DeepSpeed plugin (accelerate) is set too; the global configuration
            that `from_pretrained` reads (`transformers.integrations.deepspeed_config()`) is always set.

    Returns:
        Whether a configuration was changed.
    """
    from transformers.integrations import deepspeed_config

    configs = [deepspeed_config()]
    plugin = getattr(training_args, "deepspeed_plugin", None)
    if plugin is not None:
        configs.append(getattr(plugin, "deepspeed_config", None))
    configs = [c for c in configs if isinstance(c, dict) and c.get("zero_optimization", {}).get("stage") == 3]
    if not configs:
        return False
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return False
    changed = False
    for config in configs:
        zero = config["zero_optimization"]
        if "stage3_allgather_sequential" not in zero:
            zero["stage3_allgather_sequential"] = True
            changed = True
    return changed


@contextlib.contextmanager
def whole_under_zero3():
    """`from_pretrained` inside this block builds whole models, even under DeepSpeed ZeRO-3.

    Under ZeRO-3 transformers creates every model inside `deepspeed.zero.Init`, which partitions its parameters
    across processes; only the model DeepSpeed wraps gathers them in its forward. A frozen model beside it (COSMO's
    discriminator, arXiv 2312.06112, ECM) would be left with empty shards. transformers decides by its global
    DeepSpeed configuration (`is_deepspeed_zero3_enabled`), which this block hides and then restores.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    reference = hf_deepspeed._hf_deepspeed_config_weak_ref  # transformers keeps no public getter for the object
    config = reference() if reference is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)
