"""The run's verdict: how many private labels the attacker holds, and how soon.

Built from the epoch-level attack rows of a run (the same rows as
summary.json's "attacks") and the round at which the cumulative attacker's
labelling first reached the leak threshold. The training figure is the
cumulative attacker's: an attacker keeps what it learnt, so its knowledge at
the end of a run is the leak, not one epoch's snapshot. Where a single
snapshot scored higher, that figure is reported beside it, marked as chosen
with ground truth (an attacker cannot choose that way; a reader should still
see it).
"""

from __future__ import annotations

__all__ = ["describe_defense", "headline", "leakage"]

NOT_LABELLINGS = ("random", "cumulative")


def _best(rows: list[dict]) -> dict | None:
    scored = [r for r in rows if r.get("accuracy") is not None]
    return max(scored, key=lambda r: r["accuracy"], default=None)


def _name(row: dict) -> str:
    return f"{row['attack']}.{row['data']}"


def leakage(rows: list[dict], time_to_leak: dict | None, *, threshold: float, scored: bool) -> dict:
    """Returns summary.json's "leakage": training, per-epoch and inference leakage and the time to leak."""
    cumulative = sorted(
        (r for r in rows if r["attack"] == "cumulative" and r["phase"] == "train"), key=lambda r: r["epoch"]
    )
    singles = [r for r in rows if r["phase"] == "train" and r["attack"] not in NOT_LABELLINGS]
    inference = [r for r in rows if r["phase"] == "infer" and r["attack"] != "random"]
    per_epoch = []
    for row in cumulative:
        entry = {"epoch": row["epoch"], "accuracy": row.get("accuracy"), "attack": "cumulative", "samples": row["n"]}
        best = _best([s for s in singles if s["epoch"] <= row["epoch"]])
        if best is not None:
            entry["best_single"] = {"attack": _name(best), "epoch": best["epoch"], "accuracy": best["accuracy"]}
        if not scored:
            entry["agreement_with_previous_epoch"] = row.get("agreement_with_previous_epoch")
        per_epoch.append(entry)
    train = None
    if per_epoch:
        last = cumulative[-1]
        train = {
            "accuracy": last.get("accuracy"),
            "attack": "cumulative",
            "epoch": last["epoch"],
            "round": last.get("round"),
            "samples": last["n"],
        }
    best_snapshot = _best(singles)
    infer = None
    if scored:
        chosen = _best(inference)
        if chosen is not None:
            infer = {
                "accuracy": chosen["accuracy"],
                "attack": _name(chosen),
                "samples": chosen["n"],
                "selected_with_ground_truth": len(inference) > 1,
            }
    elif inference:
        # Without ground truth: the inference attack that agrees most with the others.
        chosen = max(inference, key=lambda r: r.get("agreement") or 0.0)
        infer = {
            "accuracy": None,
            "attack": _name(chosen),
            "samples": chosen["n"],
            "agreement": chosen.get("agreement"),
        }
    result = {
        "scored": scored,
        "threshold": threshold,
        "train": train,
        "per_epoch": per_epoch,
        "inference": infer,
        "time_to_leak": None
        if time_to_leak is None
        else {k: time_to_leak.get(k) for k in ("round", "epoch", "step", "accuracy")},
        "best_snapshot": None
        if best_snapshot is None
        else {
            "attack": _name(best_snapshot),
            "epoch": best_snapshot["epoch"],
            "accuracy": best_snapshot["accuracy"],
            "selected_with_ground_truth": True,
        },
    }
    if not scored:
        result["note"] = (
            "no ground truth was configured: accuracies are unknown; the figures are the predictions' "
            "agreement (between epochs, and between inference attacks), not accuracy"
        )
    return result


def describe_defense(defense: dict | None) -> str:
    """Returns the defense as a reader names it: "none", "dp_sgd (epsilon 10)", "marvell (s 1)"."""
    if not defense or not defense.get("name"):
        return "unknown"
    parts = []
    if defense.get("epsilon") is not None:
        parts.append(f"epsilon {defense['epsilon']:.3g}")
    if defense.get("scale") is not None:
        parts.append(f"s {defense['scale']:g}")
    if defense.get("fraction") is not None:
        parts.append(f"fraction zeroed {defense['fraction']:g}")
    return defense["name"] + (f" ({', '.join(parts)})" if parts else "")


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.1f}%"


def headline(summary: dict) -> str:
    """Returns the one line a person reads first, e.g. "labels leaked: 99.7% of 8,000 training labels by ..."."""
    verdict = summary.get("leakage") or {}
    task = summary.get("task") or {}
    parts = []
    train = verdict.get("train")
    if train is not None:
        if verdict.get("scored"):
            text = f"{_percent(train['accuracy'])} of {train['samples']:,} training labels"
            leak = verdict.get("time_to_leak")
            if leak is not None:
                text += f" by round {leak['round']:,} (epoch {leak['epoch']})"
            else:
                text += f" (never {_percent(verdict.get('threshold'))} before the end)"
            snapshot = verdict.get("best_snapshot")
            if snapshot and train["accuracy"] is not None and snapshot["accuracy"] > train["accuracy"]:
                text += (
                    f" [one snapshot, picked with ground truth: {_percent(snapshot['accuracy'])} "
                    f"({snapshot['attack']}, epoch {snapshot['epoch']})]"
                )
        else:
            text = f"{train['samples']:,} training labels estimated (no ground truth: accuracy unknown)"
        parts.append(text)
    infer = verdict.get("inference")
    if infer is not None and verdict.get("scored"):
        parts.append(f"{_percent(infer['accuracy'])} of {infer['samples']:,} inference labels")
    if task.get("failure"):
        parts.append("training failed")
    elif task.get("test_accuracy") is not None:
        parts.append(f"task accuracy {_percent(task['test_accuracy'])}")
    parts.append(f"defense {describe_defense(summary.get('defense'))}")
    return "labels leaked: " + "; ".join(parts)
