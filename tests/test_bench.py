"""The benchmark commands run as a user runs them: every form, several turns, into one --run-dir."""

import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_bench_transport_runs_every_form_for_every_turn(tmp_path):
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
    for form in ("in-process", "gRPC direct", "attacks off", "cumulative attacker off", "live attacks on (all)"):
        assert form in text, form
    assert "median of 2 runs" in text and done.stderr.count("(2/2)") == 5, "every form ran in both turns"
