"""Crash-safe runs: kill any of the three processes at any point, resume, and get the uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

from conftest import REPO
from splitleak.runlog import read_jsonl

pytestmark = pytest.mark.slow

RUN = [
    # Two epochs reach every kill point below (the mid-epoch one is in epoch 1); each of the 19 runs
    # these tests start is a second shorter than with three.
    "train.epochs=2",
    "train.batch_size=64",
    "run.checkpoint_every=10",
    "model.bottom_hidden=[32]",
    "model.cut_dim=16",
    "adversary.capture=false",
    # DP-SGD: the noise generators and the accountant's steps must survive a crash too.
    "label_party.defense.name=dp_sgd",
    "label_party.defense.epsilon=8",
]
# When to kill, in the order a run reaches them: the first new record of the attack log that matches.
POINTS = {
    "early": lambda r: r["type"] == "round" and r.get("round", 0) >= 3,
    "epoch end": lambda r: r["type"] == "epoch" and r.get("epoch") == 0,
    "mid-epoch": lambda r: r["type"] == "round" and r.get("epoch") == 1 and r.get("step", 0) >= 12,
    "during inference": lambda r: r["type"] == "round" and r.get("phase") == "infer",
    "just after Finish": lambda r: r["type"] == "finish",
}
ROLES = ("label_party", "adversary", "feature_party")
# One run kills a different process at each point, in turn from ROLES[rotation]; the three rotations
# together kill every process at every point. CI runs rotation 0 (each process killed at least once, each
# point reached); `make reliability` sets SPLITLEAK_FULL_RELIABILITY=1 and runs all three.
ALL_KILLS = os.environ.get("SPLITLEAK_FULL_RELIABILITY") == "1"
ROTATIONS = [
    pytest.param(r, marks=[] if r == 0 or ALL_KILLS else pytest.mark.skip(reason="run by make reliability"))
    for r in range(len(ROLES))
]


def _killed(rotation: int) -> dict[str, str]:
    """Which process each point kills in the run of `rotation`."""
    return {point: ROLES[(i + rotation) % len(ROLES)] for i, point in enumerate(POINTS)}


def _demo(run_dir, *extra):
    return [sys.executable, "-m", "splitleak.cli", "demo", "--run-dir", str(run_dir), *RUN, *extra]


def _outcome(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    bottom = torch.load(run_dir / "feature_party" / "bottom.pt")
    top = torch.load(run_dir / "label_party" / "top.pt")
    return summary, bottom, top


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    # Kept for the damaged-checkpoint tests (a completed run drops its checkpoints by default).
    keep = "run.keep_checkpoints=true"
    done = subprocess.run(_demo(run_dir, keep), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(any((run_dir / "checkpoints" / role).glob("step-*.pt")) for role in ROLES)
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return _outcome(uninterrupted_run)


def _assert_same_run(outcome, whole) -> None:
    summary, bottom, top = outcome
    whole_summary, whole_bottom, whole_top = whole
    for name in whole_bottom:
        assert torch.equal(bottom[name], whole_bottom[name]), f"bottom {name}"
    for name in whole_top:
        assert torch.equal(top[name], whole_top[name]), f"top {name}"
    assert _without_timings(summary["attacks"]) == _without_timings(whole_summary["attacks"])
    assert summary["leakage"] == whole_summary["leakage"]
    assert summary["task"]["test_accuracy"] == whole_summary["task"]["test_accuracy"]


def _without_timings(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _complete_lines_end(path) -> int:
    """Returns the byte offset just past the last complete line of path (0 when it does not exist)."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    return data.rfind(b"\n") + 1


def _kill_at(run_dir, role, point, *, resume: bool, extra: tuple[str, ...] = ()) -> None:
    """Starts (or resumes) the demo and SIGKILLs `role` when the attack log gains a record that matches
    `point`; then everything else, so that nobody cleans up.

    The log is read from where the last read stopped, not from its start (a re-read of the whole log
    every 20 ms took a quarter of a core from the run being watched). A resumed run cuts the torn
    line its killed predecessor left after the last complete one, and appends from there: so the new
    records begin at the end of the complete lines there were at the start.
    """
    log = run_dir / "attack_log.jsonl"
    position = _complete_lines_end(log)
    runner = subprocess.Popen(
        _demo(run_dir, *extra, *(["--resume"] if resume else [])),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while True:
            assert runner.poll() is None, f"the run ended before {point}"
            assert time.monotonic() < deadline, f"never reached {point}"
            fresh = b""
            if log.exists():
                with open(log, "rb") as f:
                    f.seek(position)
                    fresh = f.read()
            complete = fresh[: fresh.rfind(b"\n") + 1]
            position += len(complete)
            if any(POINTS[point](json.loads(line)) for line in complete.splitlines() if line.strip()):
                break
            time.sleep(0.02)
        pids = json.loads((run_dir / "processes.json").read_text())["pids"]
        os.kill(runner.pid, signal.SIGKILL)
        for name in (role, *[r for r in ROLES if r != role]):
            try:
                os.kill(pids[name], signal.SIGKILL)
            except ProcessLookupError:
                pass  # it had already exited (after Finish)
    finally:
        runner.wait()


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_a_run_killed_at_every_point_and_resumed_equals_the_uninterrupted_run(
    tmp_path, uninterrupted, rotation, figures
):
    """Kills one process at each point in turn, resuming after each kill: five crashes of one run. Complete at
    last, the run drops the checkpoints it needed no more (run.keep_checkpoints is false)."""
    run_dir = tmp_path / "run"
    start = time.monotonic()
    killed = _killed(rotation)
    for i, (point, role) in enumerate(killed.items()):
        _kill_at(run_dir, role, point, resume=i > 0)
    done = subprocess.run(_demo(run_dir, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_run(_outcome(run_dir), uninterrupted)
    assert not (run_dir / "checkpoints").exists()
    whole_summary = uninterrupted[0]
    # Every round is in the log once; what a crashed run had written and the resumed one wrote again is
    # marked as the duplicate it is.
    records = list(read_jsonl(run_dir / "attack_log.jsonl"))
    assert any(r.get("duplicate") for r in records)
    rounds = Counter(
        (r["phase"], r.get("epoch"), r.get("step"), r.get("request_id"))
        for r in records
        if r["type"] == "round" and not r.get("duplicate")
    )
    assert rounds and max(rounds.values()) == 1
    assert len(rounds) == whole_summary["adversary"]["rounds_observed"]
    figures.setdefault("resume", []).append(
        {
            "killed": killed,
            "kills": len(POINTS),
            "rounds": len(rounds),
            "duplicates_marked": sum(1 for r in records if r.get("duplicate")),
            "weights_equal": True,
            "attack_figures_equal": True,
            "seconds": round(time.monotonic() - start, 1),
        }
    )


@pytest.mark.parametrize("role", ROLES)
def test_a_damaged_checkpoint_is_named_and_the_run_resumes_from_an_older_one(
    tmp_path, uninterrupted_run, uninterrupted, role
):
    """A checkpoint cut short (as by an interrupted copy of the run directory) is refused, named in the log,
    and the run resumes from the newest older step every process holds: it still equals the whole run."""
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted_run, run_dir)
    (run_dir / "summary.json").unlink()
    newest = sorted((run_dir / "checkpoints" / role).glob("step-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    done = subprocess.run(_demo(run_dir, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_run(_outcome(run_dir), uninterrupted)
    log = done.stderr + "".join(p.read_text() for p in (run_dir / "logs").glob("*.log"))
    assert f"cannot read checkpoint {newest}" in log, log[-3000:]
