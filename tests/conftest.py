"""Shared fixtures: one run of the embedded pretraining demo, used by every test that needs a trained checkpoint."""

from pathlib import Path

import pytest

from tests.helpers import random_batch, tiny_config


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture
def batch():
    return random_batch()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, dict]:
    """One short run of `examples/pretrain.py` on its built-in data (700 pairs, 150 steps; about a minute), shared by
    the tests of the demo and of the commands that start from its checkpoint (`<folder>/model`). It ends with a Hub
    dry run (card written, files listed, nothing uploaded). The command runs in this process, as `python` runs it.

    Returns:
        `(output folder, its results.json)`.
    """
    import json

    from tests.helpers import run_example

    folder = tmp_path_factory.mktemp("pretrain_demo")
    run_example("pretrain", ["--output_dir", str(folder), "--max_steps", "150", "--num_train", "700",
                             "--num_eval", "200", "--teacher_steps", "60", "--disable_tqdm", "true",
                             "--hub_dry_run", "true", "--hub_model_id", "me/diht-demo"])
    return folder, json.loads((folder / "results.json").read_text())
