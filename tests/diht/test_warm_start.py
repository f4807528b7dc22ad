"""What a run starts from: a checkpoint, its tokenizer and image processor, a Trainer checkpoint, a timm teacher.

A file or name that cannot be loaded stops `examples/pretrain.py` with one line, `error: ...`, that names it and says
what to do (`trainers.LoadError` underneath); a warm start refuses a checkpoint that leaves weights random unless
asked (`--allow_missing_weights`), new concept heads excepted; a warm start saves no remote-code pointer of its
source's tokenizer or image processor. Expected keys and files are the ones each test removes, damages or plants.
"""

import json
import logging
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from datasets import ClassLabel, List
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel

from image_text_data.demo import CONCEPTS
from modeling_diht import DiHTModel
from tests.helpers import (
    IMAGE_SIZE,
    ONE_SGD_STEP,
    TINY_TOWER,
    arguments,
    collator_for,
    example_error,
    run_example,
    save_tiny_checkpoint,
    scene_pairs,
    tiny_model,
    tokenizer_for,
    truncate_file,
)
from trainers import DiHTTrainer
from trainers.loading import (
    LoadError,
    load_image_processor,
    load_pretrained_model,
    load_timm_model,
    load_tokenizer,
)

# The library's own remote-code pointers of a DiHT folder (README: "Load a model"), written by save_pretrained.
DIHT_AUTO_MAP = {"AutoConfig": "configuration_diht.DiHTConfig", "AutoModel": "modeling_diht.DiHTModel",
                 "AutoModelForZeroShotImageClassification": "modeling_diht.DiHTModel"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """16 pairs with the demo's concepts, saved to disk, and a tiny checkpoint folder with a head over them."""
    root = tmp_path_factory.mktemp("warm_start")
    data = scene_pairs(16, seed=3).cast_column("concept_ids", List(ClassLabel(names=list(CONCEPTS))))
    data.save_to_disk(root / "data")
    tokenizer = tokenizer_for(data)
    save_tiny_checkpoint(root / "model", tiny_model(tokenizer), tokenizer)
    return {"root": root, "data": root / "data", "model": root / "model", "tokenizer": tokenizer}


def checkpoint_copy(inputs, tmp_path: Path, name: str = "source") -> Path:
    folder = tmp_path / name
    shutil.copytree(inputs["model"], folder)
    return folder


def pretrain_error(inputs, tmp_path: Path, *argv: str) -> str:
    """The message `examples/pretrain.py` stops with: one line, `error: ...`."""
    message = example_error("pretrain", ["--dataset_path", str(inputs["data"]), *ONE_SGD_STEP,
                                         "--per_device_train_batch_size", "4", *argv,
                                         "--output_dir", str(tmp_path / "run")])
    assert message.startswith("error: ") and "\n" not in message
    return message


def rewrite_weights(folder: Path, edit) -> dict[str, torch.Tensor]:
    """Apply `edit` to the folder's state dict (in place) and save it back; returns the edited dict."""
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return weights


# ---- item 7: errors that name the file --------------------------------------------------------------------------

def test_pretrain_names_a_truncated_model_safetensors(inputs, tmp_path):
    source = checkpoint_copy(inputs, tmp_path)
    truncate_file(source / "model.safetensors")
    message = pretrain_error(inputs, tmp_path, "--model_name_or_path", str(source))
    assert str(source / "model.safetensors") in message
    assert "truncated or damaged" in message and "again" in message  # what is wrong, what to do


@pytest.mark.parametrize("damage", ["truncated shard", "missing shard"])
def test_a_damaged_shard_of_a_sharded_checkpoint_is_named(inputs, tmp_path, damage):
    folder = tmp_path / "sharded"
    tiny_model(inputs["tokenizer"]).save_pretrained(folder, max_shard_size="20KB")
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and (folder / "model.safetensors.index.json").is_file()
    shard = shards[1]
    if damage == "truncated shard":
        truncate_file(shard, keep=0.9)
    else:
        shard.unlink()
    with pytest.raises(LoadError) as raised:
        load_pretrained_model(DiHTModel, folder)
    assert str(shard) in str(raised.value)
    assert ("truncated or damaged" if damage == "truncated shard" else "is missing") in str(raised.value)


def test_pretrain_names_an_empty_config_json(inputs, tmp_path):
    source = checkpoint_copy(inputs, tmp_path)
    (source / "config.json").write_text("")
    message = pretrain_error(inputs, tmp_path, "--model_name_or_path", str(source))
    assert str(source / "config.json") in message and "not valid JSON (it is empty)" in message


@pytest.mark.parametrize(("content", "complaint"), [('{"model_type": "diht",', "not valid JSON"),
                                                    ("[1, 2]", "not a JSON object")])
def test_an_unreadable_config_json_is_named(inputs, tmp_path, content, complaint):
    source = checkpoint_copy(inputs, tmp_path)
    (source / "config.json").write_text(content)
    with pytest.raises(LoadError) as raised:
        load_pretrained_model(DiHTModel, source)
    assert str(source / "config.json") in str(raised.value) and complaint in str(raised.value)


def test_pretrain_names_a_model_name_or_path_that_does_not_exist(inputs, tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    message = pretrain_error(inputs, tmp_path, "--model_name_or_path", str(missing))
    assert f"--model_name_or_path {missing}: no such folder" in message and "check the path" in message


@pytest.mark.parametrize("source", ["./not/here", "outputs/typo/model", "~/nowhere-diht-model"])
def test_a_local_path_that_does_not_exist_is_not_looked_up_on_the_hub(source):
    # Each can only be a path (a Hub id is `name` or `owner/name`), so the error comes at once, without network.
    with pytest.raises(LoadError, match="no such folder"):
        load_pretrained_model(DiHTModel, source)


def test_a_folder_without_config_or_weights_is_named(inputs, tmp_path):
    no_config = checkpoint_copy(inputs, tmp_path, "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(LoadError, match="no config.json in"):
        load_pretrained_model(DiHTModel, no_config)
    no_weights = checkpoint_copy(inputs, tmp_path, "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(LoadError, match="holds no model.safetensors"):
        load_pretrained_model(DiHTModel, no_weights)
    with pytest.raises(LoadError, match="is a file, not a folder"):
        load_pretrained_model(DiHTModel, inputs["model"] / "model.safetensors")


def test_a_damaged_tokenizer_or_image_processor_file_is_named(inputs, tmp_path):
    source = checkpoint_copy(inputs, tmp_path)
    (source / "tokenizer.json").write_text("{")
    with pytest.raises(LoadError) as raised:
        load_tokenizer(source)
    assert str(source / "tokenizer.json") in str(raised.value) and "not valid JSON" in str(raised.value)
    (source / "preprocessor_config.json").unlink()
    with pytest.raises(LoadError, match="no preprocessor_config.json in"):
        load_image_processor(source)


@pytest.fixture(scope="module")
def trainer_checkpoint(inputs, tmp_path_factory) -> Path:
    """The output folder of a one-step run that saved `checkpoint-1`."""
    output = tmp_path_factory.mktemp("saved_run")
    run_example("pretrain", ["--dataset_path", str(inputs["data"]), "--model_name_or_path", str(inputs["model"]),
                             *ONE_SGD_STEP, "--per_device_train_batch_size", "4", "--save_strategy", "steps",
                             "--save_steps", "1", "--output_dir", str(output)])
    assert (output / "checkpoint-1" / "trainer_state.json").is_file()
    return output


def copied_run(trainer_checkpoint: Path, tmp_path: Path) -> Path:
    output = tmp_path / "output"
    shutil.copytree(trainer_checkpoint, output)
    return output


@pytest.mark.parametrize(("content", "detail"), [('{"global_step": 1, "log_history": [', "not valid JSON"),
                                                 ("", "not valid JSON (it is empty)")])
def test_pretrain_names_a_garbage_trainer_state_on_resume(inputs, trainer_checkpoint, tmp_path, content, detail):
    output = copied_run(trainer_checkpoint, tmp_path)
    state = output / "checkpoint-1" / "trainer_state.json"
    state.write_text(content)
    message = example_error("pretrain", [
        "--dataset_path", str(inputs["data"]), "--model_name_or_path", str(inputs["model"]), *ONE_SGD_STEP,
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--output_dir", str(output),
        "--resume_from_checkpoint", str(output / "checkpoint-1")])
    assert message.startswith("error: ") and "\n" not in message
    assert str(state) in message and detail in message
    assert "without --resume_from_checkpoint" in message  # what to do: no earlier checkpoint exists


def trainer_for(inputs, output: Path) -> DiHTTrainer:
    tokenizer = inputs["tokenizer"]
    return DiHTTrainer(model=tiny_model(tokenizer), args=arguments(output, max_steps=2),
                       train_dataset=scene_pairs(8), data_collator=collator_for(tokenizer))


@pytest.mark.parametrize("damaged", ["optimizer.pt", "model.safetensors", "rng_state.pth"])
def test_resuming_from_a_checkpoint_with_a_truncated_file_names_it(inputs, trainer_checkpoint, tmp_path, damaged):
    output = copied_run(trainer_checkpoint, tmp_path)
    file = output / "checkpoint-1" / damaged
    assert file.is_file()
    truncate_file(file)
    shutil.copytree(output / "checkpoint-1", output / "checkpoint-0")  # an older one, to be suggested
    (output / "checkpoint-0" / damaged).write_bytes((trainer_checkpoint / "checkpoint-1" / damaged).read_bytes())
    with pytest.raises(LoadError) as raised:
        trainer_for(inputs, output).train(resume_from_checkpoint=str(output / "checkpoint-1"))
    assert str(file) in str(raised.value) and "truncated or damaged" in str(raised.value)
    assert "resume from an earlier checkpoint (checkpoint-0" in str(raised.value)


def test_resuming_without_a_checkpoint_says_so(inputs, tmp_path):
    with pytest.raises(LoadError, match="no checkpoint-N folder in"):
        trainer_for(inputs, tmp_path).train(resume_from_checkpoint=True)
    with pytest.raises(LoadError, match="no such folder"):
        trainer_for(inputs, tmp_path).train(resume_from_checkpoint=str(tmp_path / "checkpoint-7"))


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network and an empty Hub cache, whatever the machine holds: timm must find no weights anywhere."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))


def test_pretrain_names_a_timm_teacher_without_local_weights(inputs, tmp_path, offline_hub):
    message = pretrain_error(inputs, tmp_path, "--model_name_or_path", str(inputs["model"]),
                             "--concept_teacher", "vit_base_patch16_224")
    assert "timm model 'vit_base_patch16_224': no pretrained weights in the local cache" in message
    assert "download them once" in message and "examples/label_concepts.py" in message


def test_a_timm_name_without_weights_or_unknown_is_named(offline_hub):
    with pytest.raises(LoadError, match="timm model 'resnet18': no pretrained weights in the local cache"):
        load_timm_model("resnet18")
    with pytest.raises(LoadError, match="timm model 'resnet_of_no_one' does not exist"):
        load_timm_model("resnet_of_no_one")


# ---- item 8: a warm start must not leave weights random ---------------------------------------------------------

def text_layer_keys(weights: dict, layer: int) -> list[str]:
    return sorted(k for k in weights if k.startswith(f"text_model.encoder.layers.{layer}."))


def test_pretrain_refuses_a_checkpoint_missing_tensors_unless_allowed(inputs, tmp_path):
    source = checkpoint_copy(inputs, tmp_path)
    removed = text_layer_keys(load_file(source / "model.safetensors"), 1)
    assert len(removed) == 16  # 2 LayerNorms, q/k/v/out, fc1/fc2: weight and bias each
    rewrite_weights(source, lambda w: [w.pop(k) for k in removed])

    message = pretrain_error(inputs, tmp_path, "--model_name_or_path", str(source))
    assert f"--model_name_or_path {source} lacks 16 weights of DiHTModel" in message
    assert ", ".join(removed[:6]) in message and "--allow_missing_weights" in message

    output = tmp_path / "allowed"
    run_example("pretrain", ["--dataset_path", str(inputs["data"]), "--model_name_or_path", str(source),
                             *ONE_SGD_STEP, "--per_device_train_batch_size", "4", "--allow_missing_weights", "true",
                             "--output_dir", str(output)])
    saved = load_file(output / "model" / "model.safetensors")
    assert set(removed) <= set(saved)  # trained from their initialisation, and saved


def break_shape(weights):
    weights["visual_projection.weight"] = torch.zeros(3, 3)


def rename(weights):
    weights["visual_proj.weight"] = weights.pop("visual_projection.weight")


@pytest.mark.parametrize(("edit", "missing", "unexpected", "shapes"), [
    (lambda w: [w.pop("text_projection.weight"), w.pop("logit_scale")], ["logit_scale", "text_projection.weight"],
     [], ""),
    (break_shape, ["visual_projection.weight"], [], " (1 of them with another shape)"),
    (rename, ["visual_projection.weight"], ["visual_proj.weight"], ""),
])
def test_missing_mismatched_and_renamed_keys_are_named(inputs, tmp_path, edit, missing, unexpected, shapes):
    source = checkpoint_copy(inputs, tmp_path)
    rewrite_weights(source, edit)
    with pytest.raises(LoadError) as raised:
        load_pretrained_model(DiHTModel, source)
    expected = f"lacks {len(missing)} weights of DiHTModel{shapes}: {', '.join(missing)}"
    if unexpected:
        expected += f"; unexpected in it: {', '.join(unexpected)}"
    assert expected in str(raised.value)


def test_allow_missing_weights_loads_the_rest_and_logs_the_missing(inputs, tmp_path, caplog):
    source = checkpoint_copy(inputs, tmp_path)
    weights = rewrite_weights(source, lambda w: w.pop("text_projection.weight"))
    with caplog.at_level(logging.WARNING, logger="trainers.loading"):
        model = load_pretrained_model(DiHTModel, source, allow_missing_weights=True)
    assert "text_projection.weight" in caplog.text and "allow_missing_weights" in caplog.text
    state = model.state_dict()
    for name, value in weights.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)


def clip_checkpoint(folder: Path, tokenizer) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel folder with the `position_ids` buffers that older CLIP checkpoints carry."""
    text = {**TINY_TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 16}
    torch.manual_seed(1)
    CLIPModel(CLIPConfig(text_config=text, vision_config={**TINY_TOWER, "image_size": IMAGE_SIZE, "patch_size": 2},
                         projection_dim=16)).save_pretrained(folder)
    num_patches = (IMAGE_SIZE // 2) ** 2 + 1
    return rewrite_weights(folder, lambda w: w.update({
        "text_model.embeddings.position_ids": torch.arange(16)[None],
        "vision_model.embeddings.position_ids": torch.arange(num_patches)[None]}))


@pytest.mark.parametrize("start", ["DiHT without heads", "CLIP", "DiHT with a head of another size"])
def test_new_concept_heads_are_not_missing(inputs, tmp_path, start):
    source = tmp_path / "source"
    tokenizer = inputs["tokenizer"]
    if start == "CLIP":
        weights = clip_checkpoint(source, tokenizer)
    else:
        tiny_model(tokenizer, concepts=start != "DiHT without heads").save_pretrained(source)  # its head: 9 concepts
        weights = load_file(source / "model.safetensors")
    model = load_pretrained_model(DiHTModel, source, concept_head_sizes={"concepts": 5})
    assert model.concept_heads["concepts"].weight.shape == (5, TINY_TOWER["hidden_size"])
    state = model.state_dict()
    for name, value in weights.items():  # every tensor of the source is the model's, the new head aside
        if not name.startswith("concept_heads.") and not name.endswith("position_ids"):
            torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)


def test_a_head_the_run_replaces_is_reported_unexpected(inputs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="trainers.loading"):
        model = load_pretrained_model(DiHTModel, inputs["model"], concept_head_sizes={"objects": 4})
    assert set(model.concept_heads) == {"objects"}
    assert "concept_heads.concepts.bias, concept_heads.concepts.weight are not used" in caplog.text


# ---- item 9: no foreign remote-code pointers in what a warm start saves -----------------------------------------

def plant_auto_maps(folder: Path, tokenizer_map, processor_map) -> None:
    for name, auto_map in (("tokenizer_config.json", tokenizer_map), ("preprocessor_config.json", processor_map)):
        content = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**content, "auto_map": auto_map}))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {**config["auto_map"], "AutoModelForCausalLM": "someone/else--modeling_x.X"}
    (folder / "config.json").write_text(json.dumps(config))


def test_a_warm_start_saves_no_foreign_auto_map(inputs, tmp_path):
    source = checkpoint_copy(inputs, tmp_path)
    plant_auto_maps(source, {"AutoTokenizer": ["someone/else--tokenization_x.XTokenizer", None]},
                    {"AutoImageProcessor": "someone/else--processing_x.XImageProcessor"})
    output = tmp_path / "run"
    run_example("pretrain", ["--dataset_path", str(inputs["data"]), "--model_name_or_path", str(source),
                             *ONE_SGD_STEP, "--per_device_train_batch_size", "4", "--output_dir", str(output)])
    saved = output / "model"
    assert "auto_map" not in json.loads((saved / "tokenizer_config.json").read_text())
    assert "auto_map" not in json.loads((saved / "preprocessor_config.json").read_text())
    assert json.loads((saved / "config.json").read_text())["auto_map"] == DIHT_AUTO_MAP


@pytest.mark.parametrize(("tokenizer_map", "processor_map"), [
    ({"AutoTokenizer": ["x.SlowTokenizer", "x.FastTokenizer"]}, {"AutoImageProcessor": "x.Processor",
                                                                   "AutoProcessor": "x.Processor"}),
    (["x.Tokenizer", None], {"AutoProcessor": "someone/else--x.Processor"}),
])
def test_the_loaders_drop_the_source_auto_map(inputs, tmp_path, tokenizer_map, processor_map):
    source = checkpoint_copy(inputs, tmp_path)
    plant_auto_maps(source, tokenizer_map, processor_map)
    saved = tmp_path / "saved"
    load_tokenizer(source).save_pretrained(saved)
    load_image_processor(source).save_pretrained(saved)
    assert "auto_map" not in json.loads((saved / "tokenizer_config.json").read_text())
    assert "auto_map" not in json.loads((saved / "preprocessor_config.json").read_text())
