"""The CUDA path: attacks on adversary.device give the CPU's results, and a run on cuda:0 puts every
process's work there. Skipped (with the reason) on a host without CUDA, as CI is."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from adversary.engine import AttackEngine
from conftest import REPO
from splitleak.bench_synthetic import synthetic_vectors
from splitleak.config import AttackSection

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this host")


@pytest.mark.parametrize("width", [96, 2048])
def test_attacks_on_cuda_give_the_cpu_results(width):
    n, k = 6000, 10
    grad, labels = synthetic_vectors(n, width, k, seed=1, kind="grad")
    smashed, _ = synthetic_vectors(n, width, k, seed=1, kind="smashed")
    known = np.asarray([int(np.nonzero(labels == c)[0][0]) for c in range(k)])
    ids = np.arange(n)
    results = {}
    for device in ("cpu", "cuda:0"):
        engine = AttackEngine(
            AttackSection(), known_ids=known, known_labels=labels[known], num_classes=k, device=device
        )
        for start in range(0, n, 500):  # rounds first, as live: the cumulative attacker keeps up with them
            rows = slice(start, start + 500)
            engine.train_round(ids[rows], smashed[rows], grad[rows])
        results[device] = {(r.attack, r.data): r.predictions for r in engine.train_epoch(0, ids, smashed, grad)}
    assert results["cpu"].keys() == results["cuda:0"].keys()
    for key, cpu in results["cpu"].items():
        agreement = float(np.mean(cpu == results["cuda:0"][key]))
        # Float summation order differs between the devices: a sample on a boundary may flip, no more.
        assert agreement >= 0.999, (key, agreement)


def test_a_run_on_cuda_puts_both_parties_and_the_attacks_there(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitleak.cli",
            "demo",
            "--run-dir",
            str(tmp_path),
            "--epochs",
            "2",
            "label_party.device=cuda:0",
            "feature_party.device=cuda:0",
            "adversary.device=cuda:0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["adversary"]["device"] == "cuda:0" and summary["leakage"]["train"]["accuracy"] > 0.9
    name = torch.cuda.get_device_name(0)
    assert "top model" in (tmp_path / "logs" / "label_party.log").read_text()
    assert f"on cuda:0 ({name})" in (tmp_path / "logs" / "label_party.log").read_text()
    assert f"attacks run on cuda:0 ({name})" in (tmp_path / "logs" / "adversary.log").read_text()
    assert "bottom model" in done.stderr and f"on cuda:0 ({name})" in done.stderr
