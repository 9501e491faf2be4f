"""End to end through the real entry points: separate OS processes on loopback."""

import json
import os
import subprocess
import sys

import pytest

from conftest import MNIST_DIR, REPO, needs_mnist

pytestmark = pytest.mark.slow


def _splitleak(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "splitleak.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def _epoch_accuracy(summary, attack, data):
    return {
        r["epoch"]: r["accuracy"]
        for r in summary["attacks"]
        if r["attack"] == attack and r["data"] == data and r["phase"] == "train"
    }


def _check_attacks(summary, epochs):
    for attack in ("distance", "kmeans_seeded"):
        per_epoch = _epoch_accuracy(summary, attack, "grad")
        assert sorted(per_epoch) == list(range(epochs))
        assert min(per_epoch.values()) >= 0.99, (attack, per_epoch)
    inference = [r["accuracy"] for r in summary["attacks"] if r["phase"] == "infer" and r["attack"] != "random"]
    assert max(inference) >= summary["task"]["test_accuracy"] - 0.03


def test_demo_digits_three_processes(tmp_path):
    run_dir = tmp_path / "digits"
    done = _splitleak("demo", "--dataset", "digits", "--epochs", "5", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "task accuracy" in done.stdout and "report.html" in done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"]["test_accuracy"] >= 0.93
    pids = summary["processes"]
    assert set(pids) == {"label_party", "adversary", "feature_party"}
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    for role in ("label_party", "adversary"):
        assert f"[{pids[role]}]" in (run_dir / "logs" / f"{role}.log").read_text()
    _check_attacks(summary, 5)
    assert summary["time_to_leak"]["distance/grad/train"]["round"] >= 1

    replay = _splitleak("attack", str(run_dir), "--json")
    assert replay.returncode == 0, replay.stderr
    assert all(row["matches_live"] for row in json.loads(replay.stdout))

    table = _splitleak("inspect", str(run_dir))
    assert table.returncode == 0 and "distance" in table.stdout and "at each epoch end" in table.stdout
    lines = _splitleak("inspect", str(run_dir), "--json").stdout.splitlines()
    assert json.loads(lines[0])["type"] == "hello" and json.loads(lines[-1])["type"] == "finish"


def test_demo_bad_config_is_reported_not_started(tmp_path):
    done = _splitleak("demo", "--run-dir", str(tmp_path / "x"), "train.epochs=0", "data.name=nope")
    assert done.returncode == 2
    assert "train.epochs" in done.stderr and "unknown dataset 'nope'" in done.stderr
    missing = _splitleak("demo", "--run-dir", str(tmp_path / "y"), "--dataset", "mnist", "data.path=null")
    assert missing.returncode == 2 and "data.path must name the mnist files" in missing.stderr


@needs_mnist
@pytest.mark.mnist
def test_demo_mnist_cnn(tmp_path):
    run_dir = tmp_path / "mnist"
    done = _splitleak("demo", "--config", "configs/mnist.yaml", "--run-dir", str(run_dir), f"data.path={MNIST_DIR}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"]["test_samples"] == 2000
    assert summary["task"]["test_accuracy"] >= 0.95
    _check_attacks(summary, 5)


def test_inproc_and_three_processes_give_the_same_numbers(tmp_path):
    """A sweep's --transport inproc is a shortcut, not a different experiment."""
    rows = {}
    for transport in ("inproc", "processes"):
        done = _splitleak(
            "sweep",
            "--defense",
            "grad_compression",
            "--values",
            "0.5",
            "--no-baseline",
            "--transport",
            transport,
            "--run-dir",
            str(tmp_path / transport),
            "train.epochs=2",
            "model.cut_dim=32",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        sweep = json.loads((tmp_path / transport / "sweep.json").read_text())
        rows[transport] = [{k: v for k, v in r.items() if k != "run_dir"} for r in sweep["runs"]]
        assert (tmp_path / transport / "report.html").stat().st_size > 0
    assert rows["inproc"] == rows["processes"]
