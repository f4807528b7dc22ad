"""The ablation benchmark's quick run (`benchmarks/ablations.py --quick`): it runs end to end and finds what is planted.

At the quick size (one seed, tens of steps) the components' effects are within noise, so only what is robust is
asserted: every row of the table has its figures, the outputs are written, CAT removes the planted noise, and
connection mining finds the planted false negatives far above chance.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ["HN-NCE (β = 0.5)", "CAT filter", "concept distillation", "prompt-initialised few-shot",
              "GRIT grouped batches", "ECM", "S-ITC (ε = 0.5)", "HN-NCE as COSMO's ITC"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, Path, str]:
    folder = tmp_path_factory.mktemp("ablations")
    done = subprocess.run([sys.executable, "benchmarks/ablations.py", "--quick", "--output_dir", str(folder)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / "results.json").read_text()), folder, done.stdout


def test_every_row_has_its_figures(quick_run):
    results, _, _ = quick_run
    assert [row["component"] for row in results["rows"]] == COMPONENTS
    for row in results["rows"]:
        assert row["metrics"], row["component"]
        for stats in row["metrics"].values():
            for side in ("variant", "baseline"):
                assert 0.0 <= stats[side]["mean"] <= 1.0
            assert math.isclose(stats["difference"]["mean"], stats["variant"]["mean"] - stats["baseline"]["mean"],
                                abs_tol=1e-9)
        assert row["direction"]


def test_writes_the_chart_and_prints_the_table(quick_run):
    _, folder, stdout = quick_run
    assert (folder / "ablations.png").stat().st_size > 0
    assert "| component | metric |" in stdout
    for component in COMPONENTS:
        assert f"| {component} |" in stdout


def test_cat_removes_the_planted_noise_and_keeps_clean_pairs(quick_run):
    results, _, _ = quick_run
    for info in results["cat"].values():
        by_kind = info["pool_and_kept_by_kind"]
        pool, kept = by_kind["clean"]
        assert kept >= 0.9 * pool
        noisy = sum(by_kind[kind][0] for kind in by_kind if kind != "clean")
        noisy_kept = sum(by_kind[kind][1] for kind in by_kind if kind != "clean")
        assert noisy_kept <= 0.2 * noisy


def test_connection_mining_finds_planted_false_negatives_above_chance(quick_run):
    results, _, _ = quick_run
    for seed in results["per_seed"]["runs"]:
        for variant in ("cosmo_grit_ecm", "cosmo_grit_ecm_sitc"):
            metrics = seed[variant]
            assert metrics["ecm_converted"] > 0
            assert metrics["ecm_precision"] > 1.5 * metrics["ecm_chance_precision"]
