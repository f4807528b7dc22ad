"""`accelerate launch examples/pretrain.py` on 2 CPU processes, with DDP and DeepSpeed ZeRO-2: one SGD step on
2 x 4 pairs moves the weights exactly as one step on the same 8 pairs in one process (global-batch HN-NCE). The
single-process references run in this process; the launches are separate processes, as users start them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_example, warm_start_inputs

ROOT = Path(__file__).resolve().parents[2]

# One SGD step, no warm-up, no clipping, no weight decay: the update is -lr * gradient, nothing else.
ONE_SGD_STEP = ["--max_steps", "1", "--optim", "sgd", "--learning_rate", "0.5", "--lr_scheduler_type", "constant",
                "--warmup_steps", "0", "--weight_decay", "0", "--max_grad_norm", "0", "--logging_steps", "1",
                "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none",
                "--cat_text_spotting", "false"]  # caption rules only: OCR is tested elsewhere and costs seconds


@pytest.fixture(scope="module")
def local_inputs(tmp_path_factory) -> list[str]:
    """A saved dataset with concepts and a tiny checkpoint folder to warm-start from (`tests.helpers`)."""
    return warm_start_inputs(tmp_path_factory.mktemp("inputs"))


def weights_of(output_dir: Path) -> dict[str, torch.Tensor]:
    results = json.loads((output_dir / "results.json").read_text())
    assert results["skipped"] == {"skipped_images": 0, "skipped_captions": 0, "reused_pairs": 0}
    return load_file(output_dir / "model" / "model.safetensors")


def launch(command: list[str], output_dir: Path, env: dict | None = None) -> dict[str, torch.Tensor]:
    """A multi-process run, started as a user starts it, and its saved weights."""
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    done = subprocess.run([*command, "--output_dir", str(output_dir)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return weights_of(output_dir)


def in_process(argv: list[str], output_dir: Path) -> dict[str, torch.Tensor]:
    """A single-process run of the same command in this process (no interpreter start, no second import)."""
    run_example("pretrain", [*argv, "--output_dir", str(output_dir)])
    return weights_of(output_dir)


@pytest.fixture(scope="module")
def one_process_on_eight(local_inputs, tmp_path_factory) -> dict[str, torch.Tensor]:
    return in_process([*local_inputs, *ONE_SGD_STEP, "--per_device_train_batch_size", "8"],
                      tmp_path_factory.mktemp("single"))


def accelerate(*options: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--num_processes", "2",
            "--mixed_precision", "no", "--dynamo_backend", "no", *options, "examples/pretrain.py"]


def assert_same_step(got: dict, expected: dict, local_inputs: list[str]) -> None:
    """Every tensor equals the reference, and the reference step really moved the weights it compares."""
    start = load_file(Path(local_inputs[local_inputs.index("--model_name_or_path") + 1]) / "model.safetensors")
    assert got.keys() == expected.keys() == start.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6, msg=name)
    moved = {name for name, value in expected.items() if not torch.allclose(value, start[name], rtol=1e-5, atol=1e-7)}
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= moved
    assert len(moved) > len(expected) // 2  # one SGD step of lr 0.5 moves most tensors


def test_ddp_two_processes_step_like_one_process_on_the_global_batch(local_inputs, one_process_on_eight, tmp_path):
    weights = launch([*accelerate("--multi_gpu"), *local_inputs, *ONE_SGD_STEP, "--per_device_train_batch_size", "4"],
                     tmp_path)
    assert_same_step(weights, one_process_on_eight, local_inputs)


def test_deepspeed_zero2_on_cpu_steps_like_one_process_on_the_global_batch(local_inputs, one_process_on_eight,
                                                                         tmp_path):
    weights = launch([*accelerate("--config_file", "examples/configs/deepspeed_zero2.yaml"), *local_inputs,
                      *ONE_SGD_STEP, "--per_device_train_batch_size", "4"], tmp_path, env={"DS_ACCELERATOR": "cpu"})
    assert_same_step(weights, one_process_on_eight, local_inputs)


def test_the_step_is_not_the_mean_of_two_local_batch_steps(local_inputs, one_process_on_eight, tmp_path):
    # Sanity of the two tests above: a 4-pair batch in one process (a local-only loss) gives other weights.
    weights = in_process([*local_inputs, *ONE_SGD_STEP, "--per_device_train_batch_size", "4"], tmp_path)
    name = "visual_projection.weight"
    assert not torch.allclose(weights[name], one_process_on_eight[name], rtol=1e-3)
