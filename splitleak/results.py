"""`splitleak results`: regenerates docs/results.md (and its plots) from runs it makes now.

Every number in that file comes from a run this command starts; nothing is
typed by hand. Runs use the in-process transport, which gives the same numbers
as three processes for the same seed and thread setting (tests/test_e2e.py).
The headline of every run is the cumulative attacker's (summary.json
"leakage"); the single attacks' per-epoch snapshots are shown beside it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from splitleak.config import load_config

__all__ = ["add_parser", "generate", "snapshot_shortfalls"]

REPO = Path(__file__).resolve().parent.parent
ATTACK_COLUMNS = (
    "distance.grad",
    "kmeans_seeded.grad",
    "kmeans_hungarian.grad",
    "distance.smashed",
    "kmeans_seeded.smashed",
    "kmeans_hungarian.smashed",
)
INFER_COLUMNS = ("distance", "kmeans_seeded", "train_centroids", "train_knn")
SWEEPS = ("dp_sgd", "dp_sgd_top_only", "label_dp", "grad_compression", "marvell")
LEAK_THRESHOLD = 0.99
# How far the cumulative attacker may sit below the best single snapshot (issue 7's bar).
SNAPSHOT_TOLERANCE = 0.005
SEEDS = (0, 1, 2)


def _shown(override: str) -> str:
    """Returns an override as a reader would type it from the repository root (paths made relative)."""
    key, _, value = override.partition("=")
    if value.startswith("/"):
        value = os.path.relpath(value, REPO)
    return f"{key}={value}"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _run(config_path: Path, overrides: list[str], run_dir: Path) -> dict:
    from splitleak.runner import run_in_process

    config = load_config(
        config_path, [*overrides, f"run.dir={run_dir}", "feature_party.progress=false", "run.log_level=WARNING"]
    )
    print(f"results: {config_path.name} {' '.join(overrides)}", file=sys.stderr, flush=True)
    return run_in_process(config)


def _accuracy(summary: dict, attack: str, data: str, phase: str, epoch) -> float | None:
    for r in summary["attacks"]:
        if (r["attack"], r["data"], r["phase"], r["epoch"]) == (attack, data, phase, epoch):
            return r["accuracy"]
    return None


def _cumulative(summary: dict) -> list[float | None]:
    return [e["accuracy"] for e in (summary.get("leakage") or {}).get("per_epoch", [])]


def _leak_round(summary: dict) -> str:
    leak = (summary.get("leakage") or {}).get("time_to_leak")
    return "never" if leak is None else f"round {leak['round']} (epoch {leak['epoch']})"


def snapshot_shortfalls(summary: dict, *, tolerance: float = SNAPSHOT_TOLERANCE) -> list[str]:
    """Returns, per epoch where the cumulative attacker sits more than tolerance below the best single
    attack at that or an earlier epoch, a line saying so (empty: it never does)."""
    lines = []
    for entry in (summary.get("leakage") or {}).get("per_epoch", []):
        best = entry.get("best_single")
        if entry["accuracy"] is None or best is None:
            continue
        if entry["accuracy"] < best["accuracy"] - tolerance:
            lines.append(
                f"epoch {entry['epoch']}: cumulative {entry['accuracy']:.3f} < {best['attack']} "
                f"(epoch {best['epoch']}) {best['accuracy']:.3f}"
            )
    return lines


def _epoch_rows(summary: dict, lead: list[str]) -> list[list[str]]:
    cumulative = _cumulative(summary)
    rows = []
    for epoch in range(len(cumulative)):
        rows.append(
            lead
            + [str(epoch), _fmt(cumulative[epoch])]
            + [_fmt(_accuracy(summary, *key.split("."), "train", epoch)) for key in ATTACK_COLUMNS]
        )
    return rows


EPOCH_HEADER = ["epoch", "**cumulative**"] + [k.replace(".", " / ") for k in ATTACK_COLUMNS]


class _Report:
    """Collects every run the doc reports, for the checks that cover all of them."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, dict]] = []
        self.verdicts: list[str] = []

    def add(self, label: str, summary: dict) -> dict:
        self.runs.append((label, summary))
        return summary

    def verdict(self, claim: str, holds: bool, detail: str) -> None:
        self.verdicts.append(f"- {claim}: **{'yes' if holds else 'no'}** ({detail})")


def _no_defense_section(name: str, config_path: Path, overrides: list[str], root: Path, report: _Report) -> str:
    rows, infer_rows = [], []
    digits = "digits" in name
    for layers in (1, 2, 3):
        summary = report.add(
            f"{name}, {layers}-layer top",
            _run(config_path, [*overrides, f"model.top_layers={layers}"], root / f"{name.split()[0]}-top{layers}"),
        )
        rows += _epoch_rows(summary, [str(layers)])
        test = summary["task"]["test_accuracy"]
        verdict = summary["leakage"]
        inference = [_accuracy(summary, a, "smashed", "infer", None) for a in INFER_COLUMNS]
        infer_rows.append(
            [str(layers), _fmt(test)]
            + [_fmt(v) for v in inference]
            + [f"{_fmt(verdict['inference']['accuracy'])} ({verdict['inference']['attack']})", _leak_round(summary)]
        )
        cumulative = _cumulative(summary)
        if digits:
            short = snapshot_shortfalls(summary, tolerance=0.0)
            report.verdict(
                f"{name}, {layers}-layer top, cumulative attacker >= the best single attack at that or an "
                "earlier epoch, every epoch",
                not short,
                "; ".join(short) or f"lowest epoch {min(cumulative):.3f}",
            )
        else:
            report.verdict(
                f"{name}, {layers}-layer top, cumulative attacker >= {LEAK_THRESHOLD} in every epoch",
                min(cumulative) >= LEAK_THRESHOLD,
                f"lowest epoch {min(cumulative):.3f}",
            )
        best_infer = verdict["inference"]["accuracy"]
        report.verdict(
            f"{name}, {layers}-layer top, inference leakage >= task test accuracy - 0.01",
            best_infer >= test - 0.01,
            f"{best_infer:.3f} ({verdict['inference']['attack']}) vs test accuracy {test:.3f}",
        )
    shown = " ".join([str(config_path.relative_to(REPO)), *map(_shown, overrides), "model.top_layers=N"])
    return (
        f"### {name}\n\nCommand of one run: `splitleak demo --config {shown}` (here in-process).\n\n"
        "Training phase, accuracy over all training samples at each epoch end (one known sample per class). "
        "**cumulative** is the cumulative attacker (everything seen so far, both channels); the other "
        "columns are single attacks on that epoch alone:\n\n"
        + _table(["top layers", *EPOCH_HEADER], rows)
        + "\n\nInference phase (on the test split's smashed data), the inference leakage (the best inference "
        "attack, picked with ground truth among them) and the first round at which the cumulative attacker's "
        "labelling of the training samples seen so far reached 0.95:\n\n"
        + _table(
            ["top layers", "task test accuracy"]
            + [f"{a} / smashed" for a in INFER_COLUMNS]
            + ["inference leakage", "time to leak (cumulative)"],
            infer_rows,
        )
    )


def _regime_section(mnist: Path, root: Path, report: _Report) -> str:
    rows = []
    for label, overrides, seeds in (
        ("shipped: SGD lr 0.03, no momentum", [], (0,)),
        ("aggressive: SGD lr 0.05, momentum 0.9", ["train.lr=0.05", "train.momentum=0.9"], SEEDS),
    ):
        for seed in seeds:
            tag = ("shipped" if not overrides else "aggressive") + f"-seed{seed}"
            summary = report.add(
                f"MNIST, {label}, seed {seed}",
                _run(REPO / "configs" / "mnist.yaml", [f"data.path={mnist}", *overrides, f"run.seed={seed}"], root / tag),
            )
            rows += _epoch_rows(summary, [label, str(seed), _fmt(summary["task"]["test_accuracy"])])
            if overrides:
                lowest = min(_cumulative(summary))
                report.verdict(
                    f"MNIST, {label}, seed {seed}, cumulative attacker >= {LEAK_THRESHOLD} in every epoch",
                    lowest >= LEAK_THRESHOLD,
                    f"lowest epoch {lowest:.3f}",
                )
    return (
        "Command: `splitleak demo --config configs/mnist.yaml train.lr=0.05 train.momentum=0.9 run.seed=S` "
        "against the shipped config.\n\n"
        + _table(["training", "seed", "task test accuracy", *EPOCH_HEADER], rows)
    )


def _sweep_section(name: str, mnist: Path, root: Path, img_dir: Path, report: _Report) -> str:
    from splitleak.sweep import plot_sweep, run_sweep

    config_path = REPO / "configs" / "sweeps" / f"{name}.yaml"
    overrides = [f"data.path={mnist}"] if load_config(config_path).data.path else []
    print(f"results: sweep {name}", file=sys.stderr, flush=True)
    out_dir = root / name
    rows = run_sweep(config_path, overrides, defense=None, values=None, transport="inproc", out_dir=out_dir)
    plot_sweep(rows, img_dir / f"sweep-{name}.png", title=f"{name} on {load_config(config_path).data.name}")
    binary = any(r.get("norm.grad.train") is not None for r in rows)
    keys = [k for k in SWEEP_KEYS if binary or not k.startswith(("norm", "direction"))]
    table_rows = []
    for r in rows:
        label = r["defense"] if r["strength"] is None else f"{r['defense']}-{r['strength']:g}"
        summary = report.add(f"sweep {name}, {label}", json.loads((out_dir / label / "summary.json").read_text()))
        cumulative = _cumulative(summary)
        table_rows.append(
            [
                r["defense"],
                "–" if r["strength"] is None else f"{r['strength']:g}",
                "–" if r["epsilon"] is None else f"{r['epsilon']:.2f}",
                "diverged" if r["failure"] else _fmt(r["test_accuracy"]),
                _fmt(r.get("leakage.train")),
                " / ".join(_fmt(v) for v in cumulative) or "–",
                _fmt(r.get("leakage.inference")),
                "–" if r.get("time_to_leak.round") is None else str(r["time_to_leak.round"]),
            ]
            + [_fmt(r.get(k)) for k in keys]
        )
        if name == "marvell" and r["strength"] is not None and r["strength"] <= 1:
            report.verdict(
                f"breast_cancer, Marvell s={r['strength']:g}, training leakage >= 0.95",
                r["leakage.train"] is not None and r["leakage.train"] >= 0.95,
                f"{_fmt(r['leakage.train'])}",
            )
    table = _table(
        [
            "defense",
            "strength",
            "epsilon",
            "task test accuracy",
            "**training leakage** (cumulative, end)",
            "cumulative per epoch",
            "inference leakage",
            "time to leak (round)",
        ]
        + [k.replace(".", " / ") + " (last epoch)" if k.endswith("train") else k.replace(".", " / ") for k in keys],
        table_rows,
    )
    return (
        f"### {name}\n\nCommand: `splitleak sweep --config configs/sweeps/{name}.yaml` "
        f"(here `--transport inproc`).\n\n{table}\n\n![{name} sweep](img/sweep-{name}.png)"
    )


SWEEP_KEYS = (
    "norm.grad.train",
    "direction.grad.train",
    "distance.grad.train",
    "kmeans_seeded.grad.train",
    "kmeans_seeded.smashed.train",
    "kmeans_seeded.smashed.infer",
    "train_knn.smashed.infer",
)


def _versions() -> str:
    import numpy
    import sklearn
    import torch

    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {numpy.__version__}, scikit-learn {sklearn.__version__}"
    )


def generate(out: Path, *, mnist: Path, root: Path, sweeps: tuple[str, ...] = SWEEPS) -> None:
    """Runs everything docs/results.md reports and writes it (plots under docs/img/)."""
    start = time.time()
    if not (mnist / "t10k-images-idx3-ubyte.gz").exists() and not (mnist / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(f"the MNIST IDX files are not in {mnist}: pass --mnist DIR")
    img_dir = out.parent / "img"
    report = _Report()
    sections = [
        _no_defense_section(name, config, overrides, root, report)
        for name, config, overrides in (
            ("digits (MLP bottom)", REPO / "configs" / "demo.yaml", []),
            ("MNIST (CNN bottom)", REPO / "configs" / "mnist.yaml", [f"data.path={mnist}"]),
        )
    ]
    regime = _regime_section(mnist, root, report)
    sweep_text = [_sweep_section(name, mnist, root, img_dir, report) for name in sweeps]
    shortfalls = [(label, short) for label, summary in report.runs if (short := snapshot_shortfalls(summary))]
    report.verdict(
        f"every run below: the cumulative attacker never more than {100 * SNAPSHOT_TOLERANCE:.1f} points below "
        "the best single attack at that or an earlier epoch",
        not shortfalls,
        f"{len(report.runs)} runs checked"
        + (f", {len(shortfalls)} fall short: " + "; ".join(f"{lab}: {', '.join(s)}" for lab, s in shortfalls) if shortfalls else ""),
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    doc = "\n\n".join(
        [
            "# Results",
            f"Generated by `splitleak results` (`make results`) on {datetime.date.today()} at commit {commit}, "
            f"in {time.time() - start:.0f}s on {_versions()}. Do not edit by hand: rerun the command. "
            "CNN figures may move by a few tenths of a point on other CPUs (float summation order). "
            "What the numbers mean, and where the paper's claim holds, is in "
            "[reading-the-results.md](reading-the-results.md).",
            "Every run's headline is the **cumulative attacker**: one label estimate per training sample from "
            "everything the adversary saw so far (both channels, every epoch), with no ground truth "
            "([attacks.md](attacks.md)). An attacker keeps what it learnt, so this, not one epoch's snapshot of "
            "one attack, is what leaked. The single attacks are shown beside it.",
            "## The claims checked\n\n" + "\n".join(report.verdicts),
            "## Attacks without a defense: cut depth and per-epoch accuracy",
            *sections,
            "## Training regime: the same attacks on a more confident model\n\n" + regime,
            "## Defense sweeps (the paper's grids)\n\nColumns: the task, the cumulative attacker at the last "
            "epoch (training leakage) and per epoch, the best inference attack, the first round at which the "
            "cumulative labelling reached 0.95, then single attacks at the last training epoch and on the "
            "inference pass.",
            *sweep_text,
        ]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc + "\n")


def _cmd_results(args) -> int:
    try:
        generate(
            args.out,
            mnist=args.mnist,
            root=args.run_root,
            sweeps=tuple(args.sweeps.split(",")) if args.sweeps else SWEEPS,
        )
    except FileNotFoundError as err:
        print(f"splitleak results: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def add_parser(sub) -> None:
    results = sub.add_parser("results", help="regenerate docs/results.md from fresh runs (about 25 minutes)")
    results.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    results.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    results.add_argument("--run-root", type=Path, default=Path("runs/results"))
    results.add_argument("--sweeps", help=f"comma-separated subset of {','.join(SWEEPS)}")
    results.set_defaults(func=_cmd_results)
