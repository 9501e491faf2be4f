"""Crash-safe label DP with a learnt prior: its own file, so that pytest-xdist can run it beside
tests/test_resume.py."""

import subprocess

import pytest
import torch

from conftest import REPO
from test_resume import _demo, _kill_at, _outcome

pytestmark = pytest.mark.slow


def test_label_dp_with_a_learnt_prior_and_mixup_survives_a_crash_of_the_label_party(tmp_path):
    """The stages already randomised, the recorded priors and mixup's generator are in the checkpoints:
    killed mid-epoch after its second stage started, the resumed run equals the uninterrupted one."""
    learnt = (
        "label_party.defense.name=label_dp",
        "label_party.defense.epsilon=2",
        "label_party.defense.prior=learned",
        "label_party.defense.stages=2",
        "label_party.defense.mixup_alpha=0.2",
        # Two epochs (RUN's): the second stage starts at epoch 1 and is killed mid-epoch there.
    )
    whole = tmp_path / "whole"
    done = subprocess.run(_demo(whole, *learnt), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected_summary, expected_bottom, expected_top = _outcome(whole)
    assert expected_summary["defense"]["stages_randomised"] == 2

    run_dir = tmp_path / "killed"
    _kill_at(run_dir, "label_party", "mid-epoch", resume=False, extra=learnt)
    done = subprocess.run(_demo(run_dir, *learnt, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary, bottom, top = _outcome(run_dir)
    assert summary["defense"] == expected_summary["defense"]
    assert summary["task"]["test_accuracy"] == expected_summary["task"]["test_accuracy"]
    for name in expected_top:
        assert torch.equal(top[name], expected_top[name]), name
    for name in expected_bottom:
        assert torch.equal(bottom[name], expected_bottom[name]), name
