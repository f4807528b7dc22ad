"""`accelerate launch examples/pretrain.py` on 2 CPU processes, with DDP and DeepSpeed ZeRO-2: one SGD step on
2 x 4 pairs moves the weights exactly as one step on the same 8 pairs in one process (global-batch HN-NCE)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, List
from safetensors.torch import load_file
from transformers import CLIPImageProcessor

from tests.test_trainer import IMAGE_SIZE, scene_pairs, tiny_model, tokenizer_for

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from synthetic_scenes import CONCEPTS  # noqa: E402

# One SGD step, no warm-up, no clipping, no weight decay: the update is -lr * gradient, nothing else.
ONE_SGD_STEP = ["--max_steps", "1", "--optim", "sgd", "--learning_rate", "0.5", "--lr_scheduler_type", "constant",
                "--warmup_steps", "0", "--weight_decay", "0", "--max_grad_norm", "0", "--logging_steps", "1",
                "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none",
                "--cat_text_spotting", "false"]  # caption rules only: OCR is tested elsewhere and costs seconds


@pytest.fixture(scope="module")
def local_inputs(tmp_path_factory) -> list[str]:
    """A saved dataset with teacher concepts, and a tiny checkpoint folder (weights, tokenizer, image processor) to
    warm-start from: every launcher then starts from the same weights (ZeRO-3 initialises random weights
    partitioned, with other random draws)."""
    root = tmp_path_factory.mktemp("inputs")
    data = scene_pairs(32, seed=7).cast_column("concept_ids", List(ClassLabel(names=list(CONCEPTS))))
    data.save_to_disk(root / "data")
    tokenizer = tokenizer_for(data)
    tokenizer.save_pretrained(root / "model")
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "model")
    tiny_model(tokenizer).save_pretrained(root / "model")
    return ["--dataset_path", str(root / "data"), "--model_name_or_path", str(root / "model")]


def run(command: list[str], output_dir: Path, env: dict | None = None) -> dict[str, torch.Tensor]:
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    done = subprocess.run([*command, "--output_dir", str(output_dir)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads((output_dir / "results.json").read_text())
    assert results["skipped"] == {"skipped_images": 0, "skipped_captions": 0, "reused_pairs": 0}
    return load_file(output_dir / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def one_process_on_eight(local_inputs, tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("single")
    return run([sys.executable, "examples/pretrain.py", *local_inputs, *ONE_SGD_STEP,
                "--per_device_train_batch_size", "8"], out)


def accelerate(*options: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--num_processes", "2",
            "--mixed_precision", "no", "--dynamo_backend", "no", *options, "examples/pretrain.py"]


def assert_same_weights(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    moved = 0
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6, msg=name)
        moved += 1
    assert moved > 10


def test_ddp_two_processes_step_like_one_process_on_the_global_batch(local_inputs, one_process_on_eight, tmp_path):
    weights = run([*accelerate("--multi_gpu"), *local_inputs, *ONE_SGD_STEP, "--per_device_train_batch_size", "4"],
                  tmp_path)
    assert_same_weights(weights, one_process_on_eight)


def test_deepspeed_zero2_on_cpu_steps_like_one_process_on_the_global_batch(local_inputs, one_process_on_eight,
                                                                         tmp_path):
    weights = run([*accelerate("--config_file", "examples/configs/deepspeed_zero2.yaml"), *local_inputs,
                   *ONE_SGD_STEP, "--per_device_train_batch_size", "4"], tmp_path, env={"DS_ACCELERATOR": "cpu"})
    assert_same_weights(weights, one_process_on_eight)


def test_the_step_is_not_the_mean_of_two_local_batch_steps(local_inputs, one_process_on_eight, tmp_path):
    # Sanity of the two tests above: a 4-pair batch in one process (a local-only loss) gives other weights.
    weights = run([sys.executable, "examples/pretrain.py", *local_inputs, *ONE_SGD_STEP,
                   "--per_device_train_batch_size", "4"], tmp_path)
    name = "visual_projection.weight"
    assert not torch.allclose(weights[name], one_process_on_eight[name], rtol=1e-3)
