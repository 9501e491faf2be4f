"""The Python API for notebooks: run a split-learning run and read its records.

import splitleak
summary = splitleak.run("configs/demo.yaml", **{"train.epochs": 2, "run.dir": "runs/nb"})
run = splitleak.load_run("runs/nb")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitleak.config import RunConfig, load_config, parse_config
from splitleak.runlog import read_jsonl

__all__ = ["Run", "load_run", "run"]


def _override(key: str, value: Any) -> str:
    # JSON is YAML: strings stay strings, lists and bools keep their type.
    return f"{key.replace('__', '.')}={json.dumps(value, default=str)}"


def run(
    config: str | Path | dict | RunConfig | None = None, *, transport: str = "inproc", force: bool = False, **overrides
) -> dict:
    """Returns the summary of a run (summary.json's contents) after running it.

    config: a YAML path, a dict of sections, a RunConfig, or None for the demo config.
    overrides: config keys as `**{"train.epochs": 2}` or `train__epochs=2`.
    transport: "inproc" (one process, the same numbers for the same seed) or "processes" (three processes
    over gRPC on loopback, as `splitleak demo`).
    force: replace a run already in run.dir (without it, such a directory is refused).
    """
    from splitleak.runner import run_demo, run_in_process

    pairs = [_override(k, v) for k, v in overrides.items()]
    if isinstance(config, RunConfig):
        config = config.model_dump(mode="json")
    if isinstance(config, dict):
        from splitleak.config import apply_overrides

        resolved = parse_config(apply_overrides(json.loads(json.dumps(config, default=str)), pairs))
    else:
        resolved = load_config(config, pairs)
    if transport not in ("inproc", "processes"):
        raise ValueError(f"transport must be 'inproc' or 'processes', got {transport!r}")
    if transport == "inproc":
        return run_in_process(resolved, force=force)
    return run_demo(resolved, force=force)


@dataclass
class Run:
    """A run's records: its summary, one row per round, one per epoch end, one per attack result."""

    summary: dict
    rounds: Any
    epochs: Any
    attacks: Any


def _table(rows: list[dict]):
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


def load_run(run_dir: str | Path) -> Run:
    """Returns a run's records: pandas DataFrames if pandas is installed, else lists of dicts.

    attacks has one row per attack result of every round and epoch end (record, round, epoch, step,
    phase, attack, data, n, accuracy, ...); rounds and epochs have the records without their attack lists.
    """
    run_dir = Path(run_dir)
    log = run_dir / "attack_log.jsonl"
    if not log.exists():
        raise FileNotFoundError(f"{log} does not exist: is {run_dir} a run directory?")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    from splitleak.inspect import attack_rows

    records = list(read_jsonl(log))
    rounds = [_bare(r) for r in records if r.get("type") == "round"]
    epochs = [_bare(r) for r in records if r.get("type") == "epoch"]
    return Run(summary=summary, rounds=_table(rounds), epochs=_table(epochs), attacks=_table(attack_rows(records)))


def _bare(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("attacks", "sample_ids")}
