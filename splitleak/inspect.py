"""`splitleak inspect RUN_DIR`: the attack log as the table a person reads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.table import Table

from splitleak.runlog import read_jsonl

__all__ = ["follow_records", "print_records", "records_table"]


def _cell(entry: dict) -> str:
    if entry.get("note"):
        return "n/a"
    if entry.get("accuracy") is None:
        return "unscored"
    return f"{entry['accuracy']:.3f}"


def records_table(records: list[dict], *, title: str) -> Table:
    """Returns a table with one row per round or epoch record and one column per attack × data."""
    columns: list[str] = []
    for record in records:
        for entry in record.get("attacks", []):
            key = f"{entry['attack']}/{entry['data']}"
            if key not in columns:
                columns.append(key)
    table = Table(title=title, show_lines=False)
    for name in ("round", "phase", "epoch", "step", "n", "loss", "ms"):
        table.add_column(name, justify="right")
    for key in columns:
        table.add_column(key, justify="right")
    for record in records:
        kind = record.get("type")
        if kind not in ("round", "epoch"):
            continue
        cells = {f"{e['attack']}/{e['data']}": _cell(e) for e in record.get("attacks", [])}
        loss = record.get("loss")
        table.add_row(
            str(record.get("round", "epoch end" if kind == "epoch" else "")),
            record.get("phase", ""),
            "" if record.get("epoch") is None else str(record["epoch"]),
            "" if record.get("step") is None else str(record["step"]),
            str(record.get("samples", "")),
            "" if loss is None else f"{loss:.4f}",
            "" if record.get("latency_ms") is None else f"{record['latency_ms']:.1f}",
            *[cells.get(key, "") for key in columns],
            style="bold" if kind == "epoch" else None,
        )
    return table


def _log_path(run_dir: Path) -> Path:
    path = run_dir / "attack_log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    return path


def print_records(run_dir: Path, *, as_json: bool, epochs_only: bool = False, console: Console | None = None) -> None:
    """Prints the run's attack log as a table (or as JSON lines)."""
    records = [r for r in read_jsonl(_log_path(run_dir)) if not epochs_only or r.get("type") == "epoch"]
    if as_json:
        for record in records:
            print(json.dumps(record))
        return
    console = console or Console()
    console.print(records_table(records, title=f"attack log of {run_dir}"))
    for record in records:
        if record.get("type") in ("lag", "error"):
            console.print(f"[yellow]{record['type']}[/]: {json.dumps(record)}")
    summary = run_dir / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        task = data.get("task") or {}
        console.print(f"task test accuracy: {task.get('test_accuracy')}   time to leak (>= "
                      f"{data['time_to_leak'].get('threshold')}): "
                      + ", ".join(f"{k}: round {v['round']}" if v else f"{k}: never"
                                  for k, v in data["time_to_leak"].items() if k != "threshold"))


def follow_records(run_dir: Path, *, poll_s: float = 0.5) -> Iterator[dict]:
    """Yields records as they are appended, until the run's finish record."""
    path = run_dir / "attack_log.jsonl"
    while not path.exists():
        time.sleep(poll_s)
    with open(path, encoding="utf-8") as f:
        buffer = ""
        while True:
            chunk = f.readline()
            if not chunk:
                time.sleep(poll_s)
                continue
            buffer += chunk
            if not buffer.endswith("\n"):
                continue
            record = json.loads(buffer)
            buffer = ""
            yield record
            if record.get("type") == "finish":
                return
