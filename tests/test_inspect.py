"""splitleak inspect: the table a person reads, JSON for machines, and --follow while a run goes on."""

import csv
import io
import json
import subprocess
import sys
import threading
import time

import pytest
from rich.console import Console

from conftest import REPO, small_config
from splitleak.inspect import follow_records, overview, print_records, print_run
from splitleak.runlog import JsonlWriter, write_json_atomic
from splitleak.runner import run_in_process

ROUND = {
    "type": "round",
    "phase": "train",
    "round": 1,
    "epoch": 0,
    "step": 0,
    "samples": 4,
    "loss": 2.3,
    "latency_ms": 1.5,
    "attacks": [{"attack": "distance", "data": "grad", "phase": "train", "n": 4, "seconds": 0.001, "accuracy": 0.75}],
}
EPOCH = {
    "type": "epoch",
    "phase": "train",
    "epoch": 0,
    "samples": 4,
    "attacks": [{"attack": "kmeans_seeded", "data": "grad", "phase": "train", "n": 4, "seconds": 0.01}],
}


def test_overview_gives_a_pure_dp_defense_delta_0():
    """Label DP (randomized response) is pure epsilon-DP: its delta reads 0, and a DP-SGD delta in
    scientific notation."""
    (line,) = overview({"defense": {"name": "label_dp", "epsilon": 1.0, "delta": 0.0}}, [])
    assert line == "ε = 1, δ = 0"
    (line,) = overview({"defense": {"name": "dp_sgd", "epsilon": 8.0, "delta": 1e-5}}, [])
    assert line == "ε = 8, δ = 1e-05"


def test_table_and_json(tmp_path, capsys):
    writer = JsonlWriter(tmp_path / "attack_log.jsonl")
    for record in (ROUND, EPOCH, {"type": "lag", "waited_ms": 3.0}):
        writer.write(record)
    writer.close()
    write_json_atomic(
        tmp_path / "summary.json",
        {
            "headline": "labels leaked: something",
            "defense": {"name": "label_dp", "epsilon": 2.0, "delta": 1e-5},
            "task": {"test_accuracy": 0.9610027855153204, "test_samples": 359},
            "time_to_leak": {"threshold": 0.95, "cumulative/both/train": None},
        },
    )
    console = Console(width=100, record=True)
    print_records(tmp_path, console=console, rounds=True)
    text = console.export_text()
    assert "labels leaked: something" in text and "ε = 2, δ = 1e-05" in text
    assert "on 359 test samples" in text and "0.9610027855153204" not in text
    assert "0.750" in text and "fell behind once (longest wait 3 ms)" in text and "threshold 0.95" in text
    capsys.readouterr()
    print_records(tmp_path, as_json=True)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["round", "epoch", "lag"]
    print_records(tmp_path, as_csv=True)
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["record"], r["attack"], r["accuracy"]) for r in rows] == [
        ("round", "distance", "0.75"),
        ("epoch", "kmeans_seeded", ""),
    ]


def _epoch_record(epoch, *, phase="train", attacks=None):
    names = attacks or [
        ("cumulative", "both"),
        *[(a, d) for a in ("distance", "prototype", "kmeans_seeded", "kmeans_hungarian") for d in ("grad", "smashed")],
        ("random", "none"),
    ]
    return {
        "type": "epoch",
        "phase": phase,
        "epoch": epoch,
        "attacks": [
            {"attack": a, "data": d, "phase": phase, "n": 8000, "accuracy": 0.123456789 + (epoch or 0) / 100}
            for a, d in names
        ],
    }


@pytest.mark.parametrize("epochs", [5, 30])
def test_the_terminal_view_fits_100_columns_without_truncating_a_cell(tmp_path, epochs):
    records = [_epoch_record(e) for e in range(epochs)]
    records.append(
        _epoch_record(
            None, phase="infer", attacks=[("train_knn", "smashed"), ("train_centroids", "smashed"), ("random", "none")]
        )
    )
    console = Console(width=100, record=True)
    print_run(records, None, console)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 100
    assert not any("…" in line for line in lines), "a cell was truncated"
    assert any("kmeans_hungarian smashed" in line for line in lines)
    assert any("train_centroids smashed (infer)" in line for line in lines)
    values = [word for line in lines for word in line.split() if word.startswith("0.")]
    assert values and all(len(v) == 5 for v in values), "accuracies to 3 places"
    if epochs == 30:
        assert any("of 30)" in line for line in lines), "the title says which epochs are shown"
        assert "e29" in " ".join(lines) and "e0" in " ".join(lines)


def test_json_and_csv_are_safe_to_pipe_into_head(tmp_path):
    writer = JsonlWriter(tmp_path / "attack_log.jsonl")
    for i in range(20000):
        writer.write({**ROUND, "round": i + 1})
    writer.close()
    for form in ("--json", "--csv"):
        done = subprocess.run(
            f"{sys.executable} -m splitleak.cli inspect {tmp_path} {form} | head -2",
            shell=True,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and len(done.stdout.splitlines()) == 2
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_follow_yields_records_as_they_are_written_until_finish(tmp_path):
    writer = JsonlWriter(tmp_path / "attack_log.jsonl")

    def write_slowly():
        for record in (ROUND, EPOCH, {"type": "finish"}):
            time.sleep(0.2)
            writer.write(record)

    thread = threading.Thread(target=write_slowly)
    thread.start()
    seen = [r["type"] for r in follow_records(tmp_path, poll_s=0.05)]
    thread.join()
    assert seen == ["round", "epoch", "finish"]


def test_summarize_rebuilds_the_summary_from_the_log_alone_and_inspect_skips_a_torn_line(tmp_path):
    """After a crash: summary.json comes back from attack_log.jsonl, equal to the one written live."""
    config = small_config(tmp_path, adversary={"mode": "proxy", "capture": False}, train={"epochs": 2})
    live = run_in_process(config)
    run_dir = tmp_path / "run"
    (run_dir / "summary.json").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "summarize", str(run_dir)], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(json.dumps(live))
    assert live["headline"] in done.stdout

    # A writer killed mid-line leaves a torn tail: inspect skips it, says so, and rebuilds the summary.
    (run_dir / "summary.json").unlink()
    with open(run_dir / "attack_log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"type": "round", "phase": "tra')
    done = subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "inspect", str(run_dir)], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "skipped the torn last line" in done.stderr and "rebuilt it from the attack log" in done.stderr
    assert json.loads((run_dir / "summary.json").read_text())["attacks"] == json.loads(json.dumps(live))["attacks"]


def test_summarize_names_a_directory_that_is_not_a_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "summarize", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2 and "is" in done.stderr and "a run directory" in done.stderr
