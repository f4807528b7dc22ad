"""Shared fixtures: tiny DiHT configurations built in code (no downloads), and one run of the embedded demo."""

import sys
from pathlib import Path

import pytest
import torch

import modeling_diht  # noqa: F401  (registers DiHT with the Auto classes)
from modeling_diht import DiHTConfig

TINY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


def tiny_config(**overrides) -> DiHTConfig:
    """A DiHT configuration small enough for CPU tests: 2 layers of width 32, 30 px images in 2 px patches."""
    kwargs = {
        "text_config": dict(TINY_TOWER),
        "vision_config": {**TINY_TOWER, "image_size": 30, "patch_size": 2},
        "projection_dim": 16,
    }
    kwargs.update(overrides)
    return DiHTConfig(**kwargs)


def random_batch(batch_size: int = 4, seq_len: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids shaped like OpenAI CLIP's: <|startoftext|> words <|endoftext|> then 0-padding."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for row in range(batch_size):
        length = 3 + row % (seq_len - 2)  # SOT + words + EOT, different lengths per row
        input_ids[row, 0] = 49406
        input_ids[row, 1 : length - 1] = torch.randint(1, 49000, (length - 2,), generator=generator)
        input_ids[row, length - 1] = 49407
        attention_mask[row, :length] = 1
    pixel_values = torch.randn(batch_size, 3, 30, 30, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


@pytest.fixture
def config() -> DiHTConfig:
    return tiny_config()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return random_batch()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, dict]:
    """One short run of `examples/pretrain.py` on its built-in data (700 pairs, 150 steps; about a minute), shared by
    the tests of the demo and of the commands that start from its checkpoint (`<folder>/model`). It ends with a Hub
    dry run (card written, files listed, nothing uploaded).

    Returns:
        `(output folder, the results dict main() returned)`.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import pretrain

    folder = tmp_path_factory.mktemp("pretrain_demo")
    results = pretrain.main(["--output_dir", str(folder), "--max_steps", "150", "--num_train", "700",
                             "--num_eval", "200", "--teacher_steps", "60", "--disable_tqdm", "true",
                             "--hub_dry_run", "true", "--hub_model_id", "me/diht-demo"])
    return folder, results
