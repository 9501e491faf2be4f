"""summary.json as a pure function of attack_log.jsonl: built by the same code live, after a crash, and
by `splitleak summarize RUN_DIR`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from adversary.leakage import headline, leakage
from splitleak.runlog import read_jsonl, write_json_atomic

log = logging.getLogger(__name__)

__all__ = ["build_summary", "summarize"]

# What an epoch-end attack row of the summary keeps from its log entry.
KEPT = ("attack", "data", "phase", "accuracy", "auc", "n", "seconds", "reference")
LABEL_FREE = ("agreement", "agreement_with_previous_epoch")


def build_summary(records: Iterable[dict], config) -> dict:
    """Returns the run's summary from its log records (records marked duplicate are skipped)."""
    threshold = config.adversary.leak_threshold
    hello: dict = {}
    finish: dict | None = None
    rows: list[dict] = []
    time_to_leak: dict[str, dict | None] = {}
    rounds = 0
    first_t = last_t = None
    for record in records:
        if record.get("duplicate"):
            continue
        t = record.get("t")
        if t is not None:
            first_t = t if first_t is None else first_t
            last_t = t
        kind = record.get("type")
        if kind == "hello":
            hello = record
        elif kind == "finish":
            finish = {k: record.get(k) for k in ("task", "defense", "timing")}
        elif kind == "round" and "round" in record:
            rounds += 1
            for entry in record.get("attacks", []):
                if entry.get("accuracy") is None:
                    continue
                key = f"{entry['attack']}/{entry['data']}/{entry['phase']}"
                time_to_leak.setdefault(key, None)
                if time_to_leak[key] is None and entry["accuracy"] >= threshold:
                    time_to_leak[key] = {
                        "round": record["round"],
                        "epoch": record.get("epoch"),
                        "step": record.get("step"),
                        "accuracy": entry["accuracy"],
                    }
        elif kind == "epoch":
            for entry in record.get("attacks", []):
                rows.append(
                    {k: entry.get(k) for k in KEPT}
                    | {"epoch": record.get("epoch"), "round": record.get("round")}
                    | {k: entry[k] for k in LABEL_FREE if k in entry}
                )
    scored = config.adversary.ground_truth is not None
    summary = {
        "run_id": hello.get("run_id", config.run.id),
        "dataset": config.data.name,
        "num_classes": hello.get("num_classes"),
        "cut_shape": hello.get("cut_shape"),
        "top_layers": config.model.top_layers,
        "complete": finish is not None,
        **(finish or {"task": None, "defense": None, "timing": None}),
        "adversary": {
            "mode": config.adversary.mode,
            "device": config.adversary.device,
            "rounds_observed": rounds,
            "scored": scored,
            "seconds": None if first_t is None else last_t - first_t,
        },
        "attacks": rows,
        "time_to_leak": {"threshold": threshold, **time_to_leak},
    }
    summary["leakage"] = leakage(rows, time_to_leak.get("cumulative/both/train"), threshold=threshold, scored=scored)
    summary["headline"] = headline(summary)
    return summary


def summarize(run_dir: Path) -> dict:
    """Rebuilds RUN_DIR/summary.json from RUN_DIR/attack_log.jsonl and RUN_DIR/config.yaml; returns it."""
    from splitleak.config import load_config

    run_dir = Path(run_dir)
    log_path = run_dir / "attack_log.jsonl"
    if not log_path.exists():
        raise FileNotFoundError(f"{log_path} does not exist: is {run_dir} a run directory?")
    summary = build_summary(read_jsonl(log_path), load_config(run_dir / "config.yaml"))
    write_json_atomic(run_dir / "summary.json", summary)
    return summary
