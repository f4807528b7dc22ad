"""`examples/pretrain_cosmo.py`: the embedded demo learns and its connection mining finds the planted false negatives
more often than chance; its folder loads with `AutoModel`; the same command runs on 2 processes with DDP and with
DeepSpeed ZeRO-2 and ZeRO-3 (one SGD step, the same weights); bad input stops it with a message."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, Features, Image, List, Value
from safetensors.torch import load_file
from transformers import AutoModel

from image_text_data.demo import build_grouped_scenes, build_wordpiece_tokenizer
from modeling_cosmo import CosmoForImageTextRetrieval, CosmoForPreTraining, cosmo_image_processor
from tests.cosmo.helpers import tiny_config
from tests.helpers import example_error, run_example

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A shortened run of the demo (fewer scenes and epochs than its defaults): about 40 s. Checked with seeds 0 and 1:
    R@1 >= 20% (chance 5%), zero-shot >= 18%, ECM precision 39% against 21% chance."""
    folder = tmp_path_factory.mktemp("cosmo_demo")
    run_example("pretrain_cosmo", ["--output_dir", str(folder), "--num_train_images", "300",
                                   "--num_discriminator_images", "300", "--discriminator_epochs", "15",
                                   "--num_train_epochs", "6", "--num_eval_images", "100", "--disable_tqdm", "true"])
    return folder, json.loads((folder / "results.json").read_text())


def test_the_demo_learns_far_above_chance(demo_run):
    _, results = demo_run
    assert results["train_loss_last"] < results["train_loss_first"] - 1.0
    retrieval, chance = results["retrieval"], results["retrieval_chance"]
    assert retrieval["text_to_image_recall@1"] > 2.5 * chance["text_to_image_recall@1"]
    assert retrieval["image_to_text_recall@1"] > 2.5 * chance["image_to_text_recall@1"]
    assert results["zero_shot_top1"] > 2.5 * results["chance_top1"]
    assert "reranked_text_to_image_recall@1" in retrieval  # the ITM re-ranking ran (its quality: RESULTS.md)


def test_connection_mining_finds_the_planted_false_negatives_more_often_than_chance(demo_run):
    _, results = demo_run
    ecm = results["ecm"]
    quality = ecm["quality"]
    assert quality["scored"] == sum(ecm["scored_pairs"].values())
    assert quality["converted"] == ecm["scored_pairs"]["converted"] > 0
    assert quality["precision"] > 1.2 * quality["chance_precision"]
    assert 0 < quality["recall"] <= 1


def test_the_demo_folders_load_and_carry_a_card(demo_run):
    folder, results = demo_run
    model = AutoModel.from_pretrained(folder / "model")
    assert type(model).__name__ == "CosmoModel"
    discriminator = CosmoForImageTextRetrieval.from_pretrained(folder / "discriminator")
    assert discriminator.config.hard_negative_mode == "random"  # the demo's calibrated matcher
    card = (folder / "model" / "README.md").read_text()
    assert "GRIT grouped mini-batches" in card and "connection mining" in card
    assert (folder / "training_curves.png").stat().st_size > 10_000
    assert results["skipped"]["skipped_images"] == 0


# ---- your own data, on 2 processes -------------------------------------------------------------------------------

ONE_SGD_STEP = ["--max_steps", "1", "--optim", "sgd", "--learning_rate", "0.5", "--lr_scheduler_type", "constant",
                "--warmup_steps", "0", "--weight_decay", "0", "--max_grad_norm", "0", "--logging_steps", "1",
                "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none", "--train_augmentation", "false"]


@pytest.fixture(scope="module")
def local_inputs(tmp_path_factory):
    """COCO-style data (a list of captions per image), a tiny checkpoint and a discriminator folder."""
    root = tmp_path_factory.mktemp("cosmo_inputs")
    scenes = build_grouped_scenes(8, captions_per_image=2, image_size=32, seed=5)
    images = [scenes[i]["image"] for i in range(0, len(scenes), 2)]
    captions = [[scenes[i]["caption"], scenes[i + 1]["caption"]] for i in range(0, len(scenes), 2)]
    Dataset.from_dict({"image": images, "caption": captions},
                      features=Features({"image": Image(), "caption": List(Value("string"))})
                      ).save_to_disk(root / "data")
    tokenizer = build_wordpiece_tokenizer([c for pair in captions for c in pair])
    torch.manual_seed(0)
    config = tiny_config(text={"vocab_size": len(tokenizer), "max_position_embeddings": 32})
    for name, cls in (("model", CosmoForPreTraining), ("discriminator", CosmoForImageTextRetrieval)):
        cls(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        cosmo_image_processor(32).save_pretrained(root / name)
    return ["--dataset_path", str(root / "data"), "--model_name_or_path", str(root / "model"), "--discriminator",
            str(root / "discriminator")]


def launch(options: list[str], argv: list[str], output_dir: Path, env=None) -> dict[str, torch.Tensor]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--num_processes", "2",
               "--mixed_precision", "no", "--dynamo_backend", "no", *options, "examples/pretrain_cosmo.py", *argv,
               "--output_dir", str(output_dir)]
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads((output_dir / "results.json").read_text())
    assert sum(results["ecm"]["scored_pairs"].values()) > 0  # ECM ran on every process
    return load_file(output_dir / "model" / "model.safetensors")


def test_ddp_and_deepspeed_zero2_and_zero3_take_the_same_step(local_inputs, tmp_path):
    argv = [*local_inputs, *ONE_SGD_STEP, "--per_device_train_batch_size", "4"]
    ddp = launch(["--multi_gpu"], argv, tmp_path / "ddp")
    start = load_file(Path(local_inputs[3]) / "model.safetensors")
    assert not torch.allclose(ddp["vision_proj.weight"], start["vision_proj.weight"])
    for stage in ("zero2", "zero3"):  # the configs as shipped, unchanged for COSMO
        deepspeed = launch(["--config_file", f"examples/configs/deepspeed_{stage}.yaml"], argv, tmp_path / stage,
                           env={"DS_ACCELERATOR": "cpu"})
        assert deepspeed.keys() == ddp.keys(), stage  # ZeRO-3 saves the gathered weights under their own names
        for name, value in ddp.items():
            torch.testing.assert_close(deepspeed[name], value, rtol=1e-4, atol=1e-6, msg=f"{stage}: {name}")


def test_own_data_without_a_discriminator_stops_with_a_message(local_inputs, tmp_path):
    argv = [*local_inputs[:4], *ONE_SGD_STEP, "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="--discriminator"):
        run_example("pretrain_cosmo", argv)


def test_grouped_batches_on_a_stream_are_refused_with_a_message(local_inputs, tmp_path):
    argv = [*local_inputs, *ONE_SGD_STEP, "--streaming", "true", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="--grouped_batches false"):
        run_example("pretrain_cosmo", argv)


def test_a_model_folder_that_is_not_a_checkpoint_is_named(local_inputs, tmp_path):
    (tmp_path / "empty").mkdir()
    argv = [*local_inputs, *ONE_SGD_STEP, "--model_name_or_path", str(tmp_path / "empty"), "--output_dir",
            str(tmp_path / "out")]
    message = example_error("pretrain_cosmo", argv)
    assert "--model_name_or_path" in message and "config.json" in message
