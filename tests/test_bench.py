"""The benchmark commands run as a user runs them: every form, several turns, into one --run-dir."""

import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_bench_transport_runs_each_form_for_every_turn(tmp_path):
    """In-process and gRPC direct, two turns each, into one --run-dir (each turn replaces its form's run)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitleak.cli",
            "bench",
            "transport",
            "--run-dir",
            str(tmp_path / "bench"),
            "--repeats",
            "2",
            "--no-doc",
            "--forms",
            "inproc,grpc",
            "train.epochs=1",
            "model.cut_dim=16",
            "model.bottom_hidden=[32]",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    assert "| in-process |" in text and "| gRPC direct |" in text and "proxy" not in text
    assert "median of 2 runs" in text and done.stderr.count("(2/2)") == 2, "both forms ran in both turns"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitleak.cli",
            "bench",
            "transport",
            "--forms",
            "nope",
            "--run-dir",
            str(tmp_path / "x"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "the forms are inproc" in refused.stderr and not (tmp_path / "x").exists()
