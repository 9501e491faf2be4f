"""`splitleak inspect RUN_DIR`: the attack log as the table a person reads."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.table import Table

from splitleak.runlog import read_jsonl

__all__ = ["attack_rows_table", "wide_console", "follow_records", "print_records", "records_table"]


def _cell(entry: dict) -> str:
    if entry.get("note"):
        return "n/a"
    if entry.get("accuracy") is None:
        return "unscored"
    return f"{entry['accuracy']:.3f}"


def records_table(records: list[dict], *, title: str | None) -> Table:
    """Returns a table with one row per round or epoch record and one column per attack × data."""
    columns: list[str] = []
    for record in records:
        for entry in record.get("attacks", []):
            key = f"{entry['attack']}/{entry['data']}"
            if key not in columns:
                columns.append(key)
    rounds = any(r.get("type") == "round" for r in records)
    base = ("round", "phase", "epoch", "step", "n", "loss", "ms") if rounds else ("phase", "epoch", "n")
    table = Table(title=title)
    for name in base:
        table.add_column(name, justify="right")
    for key in columns:
        table.add_column(key.replace("/", "\n"), justify="right")
    for record in records:
        cells = {f"{e['attack']}/{e['data']}": _cell(e) for e in record.get("attacks", [])}
        values = {
            "round": str(record.get("round", "")),
            "phase": record.get("phase", ""),
            "epoch": "" if record.get("epoch") is None else str(record["epoch"]),
            "step": "" if record.get("step") is None else str(record["step"]),
            "n": str(record.get("samples", "")),
            "loss": "" if record.get("loss") is None else f"{record['loss']:.4f}",
            "ms": "" if record.get("latency_ms") is None else f"{record['latency_ms']:.1f}",
        }
        table.add_row(*[values[name] for name in base], *[cells.get(key, "") for key in columns])
    return table


def attack_rows_table(rows: list[dict], *, title: str, extra: tuple[str, ...] = ()) -> Table:
    """Returns a table of summary-style attack rows (attack, data, phase, epoch, accuracy, n, then extra keys)."""
    table = Table(title=title)
    for col in ("attack", "data", "phase", "epoch", "accuracy", "n", *extra):
        table.add_column(col.replace("_", " "))
    for row in rows:
        accuracy = row.get("accuracy")
        table.add_row(
            row["attack"],
            row["data"],
            row["phase"],
            "–" if row.get("epoch") is None else str(row["epoch"]),
            "unscored" if accuracy is None else f"{accuracy:.4f}",
            str(row["n"]),
            *[str(row.get(key)) for key in extra],
        )
    return table


def wide_console() -> Console:
    """Returns a console wide enough for the attack columns even when writing to a file or pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=240)


def _log_path(run_dir: Path) -> Path:
    path = run_dir / "attack_log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    return path


def print_records(run_dir: Path, *, as_json: bool, epochs_only: bool = False, console: Console | None = None) -> None:
    """Prints the run's attack log as a table (or as JSON lines). A torn last line (the log of a crashed
    writer) is skipped and said so on stderr; a missing summary.json is rebuilt from the log."""
    torn: list[str] = []
    records = [r for r in read_jsonl(_log_path(run_dir), torn=torn) if not epochs_only or r.get("type") == "epoch"]
    if torn:
        print(
            f"splitleak inspect: skipped the torn last line of {run_dir / 'attack_log.jsonl'} "
            f"({len(torn[0])} characters; its writer was killed mid-write)",
            file=sys.stderr,
        )
    if as_json:
        for record in records:
            print(json.dumps(record))
        return
    console = console or wide_console()
    summary_path = run_dir / "summary.json"
    if not summary_path.exists() and (run_dir / "config.yaml").exists():
        from adversary.summary import summarize

        summarize(run_dir)
        print(f"splitleak inspect: {summary_path} was missing; rebuilt it from the attack log", file=sys.stderr)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if summary and summary.get("headline"):
        console.print(summary["headline"], style="bold", markup=False, highlight=False)
    rounds = [r for r in records if r.get("type") == "round"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    if rounds:
        console.print(records_table(rounds, title=f"rounds of {run_dir} (per-round attacks: accuracy on the batch)"))
    if epochs:
        console.print(records_table(epochs, title=f"epoch ends of {run_dir} (full-epoch and inference-phase attacks)"))
    for record in records:
        if record.get("type") in ("lag", "error"):
            console.print(f"[yellow]{record['type']}[/]: {json.dumps(record)}")
    if summary:
        task = summary.get("task") or {}
        console.print(
            f"task test accuracy: {task.get('test_accuracy')}   time to leak (>= "
            f"{summary['time_to_leak'].get('threshold')}): "
            + ", ".join(
                f"{k}: round {v['round']}" if v else f"{k}: never"
                for k, v in summary["time_to_leak"].items()
                if k != "threshold"
            )
        )


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
