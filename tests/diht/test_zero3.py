"""DeepSpeed ZeRO-3 with a warm start saves the gathered weights under the model's own parameter names.

transformers 5 reverses, when saving, the key renamings it recorded while loading; CLIP's towers carry a renaming
scoped to them (a tower checkpoint's `text_model.` prefix). Loading under ZeRO-3 recorded it although it never
matched, so the save wrote `text_model.text_model.…` and `vision_model.vision_model.…`. A DiHT model now always
saves under its own names (`modeling_diht`'s `save_pretrained`). The 2-process run is started as users start it
(`accelerate launch` with `examples/configs/deepspeed_zero3.yaml`, on CPU); its one SGD step on 2 x 4 pairs must
equal one step on the same 8 pairs in one process (global-batch HN-NCE), key for key. On CPU that needs DeepSpeed's
sequential parameter gathers (`trainers.loading.sequential_zero3_gathers_on_cpu`): its coalesced gather reads
buffers that gloo has not filled yet, and then loss and weights vary from run to run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.integrations import HfDeepSpeedConfig, unset_hf_deepspeed_config

from modeling_diht import DiHTModel
from tests.helpers import ONE_SGD_STEP, run_example, warm_start_inputs
from trainers.loading import sequential_zero3_gathers_on_cpu

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_inputs(tmp_path_factory) -> list[str]:
    """A saved dataset with concepts and a tiny checkpoint folder to warm-start from (`tests.helpers`)."""
    return warm_start_inputs(tmp_path_factory.mktemp("zero3_inputs"))


def start_weights(local_inputs: list[str]) -> dict[str, torch.Tensor]:
    return load_file(Path(local_inputs[local_inputs.index("--model_name_or_path") + 1]) / "model.safetensors")


def test_zero3_warm_start_saves_the_gathered_step_under_the_models_names(local_inputs, tmp_path):
    # The reference: one process, the 8 pairs of the global batch.
    run_example("pretrain", [*local_inputs, *ONE_SGD_STEP, "--per_device_train_batch_size", "8",
                             "--output_dir", str(tmp_path / "single")])
    expected = load_file(tmp_path / "single" / "model" / "model.safetensors")

    output = tmp_path / "zero3"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               "examples/configs/deepspeed_zero3.yaml", "--num_machines", "1", "--num_processes", "2",
               "--mixed_precision", "no", "--dynamo_backend", "no", "examples/pretrain.py", *local_inputs,
               *ONE_SGD_STEP, "--per_device_train_batch_size", "4", "--output_dir", str(output)]
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false",
                   "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads((output / "results.json").read_text())
    assert {"skipped_images", "skipped_captions"} <= set(results["skipped"]) and not any(results["skipped"].values())

    saved = load_file(output / "model" / "model.safetensors")
    start = start_weights(local_inputs)
    assert saved.keys() == start.keys() == expected.keys()  # no `text_model.text_model.…`
    model, info = DiHTModel.from_pretrained(output / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = model.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(saved[name], value, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(state[name], saved[name], rtol=0, atol=0, msg=name)
    moved = {name for name, value in expected.items() if not torch.allclose(value, start[name], rtol=1e-5, atol=1e-7)}
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= moved
    assert len(moved) > len(expected) // 2  # one SGD step of lr 0.5 moves most tensors


def test_a_renaming_recorded_but_never_applied_does_not_rename_the_save(local_inputs, tmp_path):
    # What transformers' ZeRO-3 loader leaves on the model: every candidate renaming, matched or not.
    source = Path(local_inputs[local_inputs.index("--model_name_or_path") + 1])
    model = DiHTModel.from_pretrained(source)
    model._weight_conversions = get_model_conversion_mapping(model)
    model.save_pretrained(tmp_path / "saved")
    assert load_file(tmp_path / "saved" / "model.safetensors").keys() == start_weights(local_inputs).keys()


def test_a_folder_saved_under_doubled_prefixes_loads_and_is_written_back_in_the_models_names(local_inputs,
                                                                                            tmp_path):
    # The output of the old bug: every tower key under `text_model.text_model.` / `vision_model.vision_model.`.
    source = Path(local_inputs[local_inputs.index("--model_name_or_path") + 1])
    start = start_weights(local_inputs)
    doubled = {(f"{name.split('.')[0]}.{name}" if name.startswith(("text_model.", "vision_model.")) else name): value
               for name, value in start.items()}
    folder = tmp_path / "doubled"
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    save_file(doubled, folder / "model.safetensors", metadata={"format": "pt"})

    model, info = DiHTModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model.save_pretrained(tmp_path / "resaved")
    resaved = load_file(tmp_path / "resaved" / "model.safetensors")
    assert resaved.keys() == start.keys()
    for name, value in start.items():
        torch.testing.assert_close(resaved[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(("zero", "expected"), [
    ({"stage": 3}, {"stage": 3, "stage3_allgather_sequential": True}),
    ({"stage": 3, "stage3_allgather_sequential": False}, {"stage": 3, "stage3_allgather_sequential": False}),
    ({"stage": 2}, {"stage": 2}),
])
def test_zero3_on_cpu_gathers_one_parameter_at_a_time(zero, expected):
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":  # on a GPU the coalesced gather is safe: nothing changes
        expected = zero
    config = HfDeepSpeedConfig({"train_micro_batch_size_per_gpu": 1, "zero_optimization": dict(zero)})
    try:
        changed = sequential_zero3_gathers_on_cpu()
        assert config.config["zero_optimization"] == expected
        assert changed == (expected != zero)
    finally:
        unset_hf_deepspeed_config()
