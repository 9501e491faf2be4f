"""splitleak inspect: the table a person reads, JSON for machines, and --follow while a run goes on."""

import json
import threading
import time

from rich.console import Console

from splitleak.inspect import follow_records, print_records
from splitleak.runlog import JsonlWriter, write_json_atomic

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
