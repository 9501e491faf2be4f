"""splitleak inspect: the table a person reads, JSON for machines, and --follow while a run goes on."""

import json
import subprocess
import sys
import threading
import time

from rich.console import Console

from conftest import REPO, small_config
from splitleak.inspect import follow_records, print_records
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


def test_table_and_json(tmp_path, capsys):
    writer = JsonlWriter(tmp_path / "attack_log.jsonl")
    for record in (ROUND, EPOCH, {"type": "lag", "waited_ms": 3.0}):
        writer.write(record)
    writer.close()
    write_json_atomic(
        tmp_path / "summary.json",
        {"task": {"test_accuracy": 0.9}, "time_to_leak": {"threshold": 0.95, "distance/grad/train": None}},
    )
    console = Console(width=200, record=True)
    print_records(tmp_path, as_json=False, console=console)
    text = console.export_text()
    assert "0.750" in text and "unscored" in text and "lag" in text and "distance/grad/train: never" in text
    capsys.readouterr()
    print_records(tmp_path, as_json=True)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["round", "epoch", "lag"]


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
