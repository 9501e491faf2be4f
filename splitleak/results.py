"""`splitleak results`: regenerates docs/results.md (and its plots) from runs it makes now.

Every number in that file comes from a run this command starts; nothing is
typed by hand. Runs use the in-process transport, which gives the same numbers
as three processes for the same seed and thread setting (tests/test_e2e.py).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

from splitleak.config import load_config

__all__ = ["add_parser", "generate"]

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


def _no_defense_section(name: str, config_path: Path, overrides: list[str], root: Path) -> tuple[str, list[str]]:
    rows, infer_rows, verdicts = [], [], []
    for layers in (1, 2, 3):
        summary = _run(config_path, [*overrides, f"model.top_layers={layers}"], root / f"{name}-top{layers}")
        epochs = summary["task"]["epochs"]
        test = summary["task"]["test_accuracy"]
        for epoch in range(epochs):
            rows.append(
                [str(layers), str(epoch)]
                + [_fmt(_accuracy(summary, *key.split("."), "train", epoch)) for key in ATTACK_COLUMNS]
            )
        inference = [_accuracy(summary, a, "smashed", "infer", None) for a in INFER_COLUMNS]
        leak = summary["time_to_leak"].get("distance/grad/train")
        infer_rows.append(
            [str(layers), _fmt(test)] + [_fmt(v) for v in inference] + [f"round {leak['round']}" if leak else "never"]
        )
        if layers == 1:
            for attack in ("distance", "kmeans_seeded"):
                per_epoch = [_accuracy(summary, attack, "grad", "train", e) for e in range(epochs)]
                lowest = min(v for v in per_epoch if v is not None)
                verdicts.append(
                    f"- {name}, 1-layer top, gradient {attack} attack >= {LEAK_THRESHOLD} in every epoch: "
                    f"**{'yes' if lowest >= LEAK_THRESHOLD else 'no'}** (lowest epoch {lowest:.3f})"
                )
            best = max(v for v in inference if v is not None)
            verdicts.append(
                f"- {name}, 1-layer top, best inference-phase attack >= test accuracy - 0.03: "
                f"**{'yes' if best >= test - 0.03 else 'no'}** ({best:.3f} vs test accuracy {test:.3f})"
            )
    header = ["top layers", "epoch"] + [k.replace(".", " / ") for k in ATTACK_COLUMNS]
    shown = " ".join([str(config_path.relative_to(REPO)), *map(_shown, overrides), "model.top_layers=N"])
    text = (
        f"### {name}\n\nCommand of one run: `splitleak demo --config {shown}` (here in-process).\n\n"
        f"Training-phase attacks, accuracy per epoch (one known sample per class):\n\n{_table(header, rows)}\n\n"
        f"Inference-phase attacks at the last epoch, and how soon the gradient distance attack reached "
        f"0.95 on a batch:\n\n"
        + _table(
            ["top layers", "task test accuracy"]
            + [f"{a} / smashed" for a in INFER_COLUMNS]
            + ["time to leak (distance / grad)"],
            infer_rows,
        )
    )
    return text, verdicts


def _regime_section(mnist: Path, root: Path) -> str:
    rows = []
    for label, overrides in (
        ("shipped: SGD lr 0.03, no momentum", []),
        ("aggressive: SGD lr 0.05, momentum 0.9", ["train.lr=0.05", "train.momentum=0.9"]),
    ):
        summary = _run(
            REPO / "configs" / "mnist.yaml",
            [f"data.path={mnist}", *overrides],
            root / ("regime-" + ("shipped" if not overrides else "aggressive")),
        )
        for epoch in range(summary["task"]["epochs"]):
            rows.append(
                [label, _fmt(summary["task"]["test_accuracy"]), str(epoch)]
                + [_fmt(_accuracy(summary, *key.split("."), "train", epoch)) for key in ATTACK_COLUMNS]
            )
    header = ["training", "task test accuracy", "epoch"] + [k.replace(".", " / ") for k in ATTACK_COLUMNS]
    return (
        "Command: `splitleak demo --config configs/mnist.yaml train.lr=0.05 train.momentum=0.9` against the "
        "shipped config.\n\n" + _table(header, rows)
    )


def _sweep_section(name: str, mnist: Path, root: Path, img_dir: Path) -> str:
    from splitleak.sweep import plot_sweep, run_sweep

    config_path = REPO / "configs" / "sweeps" / f"{name}.yaml"
    overrides = [f"data.path={mnist}"] if load_config(config_path).data.path else []
    print(f"results: sweep {name}", file=sys.stderr, flush=True)
    rows = run_sweep(config_path, overrides, defense=None, values=None, transport="inproc", out_dir=root / name)
    plot_sweep(rows, img_dir / f"sweep-{name}.png", title=f"{name} on {load_config(config_path).data.name}")
    keys = [
        "distance.grad.train",
        "kmeans_seeded.grad.train",
        "kmeans_seeded.smashed.train",
        "kmeans_seeded.smashed.infer",
        "train_knn.smashed.infer",
    ]
    if any("norm.grad.train" in r for r in rows):
        keys = ["norm.grad.train", "direction.grad.train"] + keys
    table = _table(
        ["defense", "strength", "epsilon", "task test accuracy"] + [k.replace(".", " / ") for k in keys],
        [
            [
                r["defense"],
                "–" if r["strength"] is None else f"{r['strength']:g}",
                "–" if r["epsilon"] is None else f"{r['epsilon']:.2f}",
                "diverged" if r["failure"] else _fmt(r["test_accuracy"]),
            ]
            + [_fmt(r.get(k)) for k in keys]
            for r in rows
        ],
    )
    return (
        f"### {name}\n\nCommand: `splitleak sweep --config configs/sweeps/{name}.yaml` "
        f"(here `--transport inproc`). Attack columns: last training epoch, and the inference pass.\n\n"
        f"{table}\n\n![{name} sweep](img/sweep-{name}.png)"
    )


def generate(out: Path, *, mnist: Path, root: Path, sweeps: tuple[str, ...] = SWEEPS) -> None:
    """Runs everything docs/results.md reports and writes it (plots under docs/img/)."""
    start = time.time()
    if not (mnist / "t10k-images-idx3-ubyte.gz").exists() and not (mnist / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(f"the MNIST IDX files are not in {mnist}: pass --mnist DIR")
    img_dir = out.parent / "img"
    sections, verdicts = [], []
    for name, config, overrides in (
        ("digits (MLP bottom)", REPO / "configs" / "demo.yaml", []),
        ("MNIST (CNN bottom)", REPO / "configs" / "mnist.yaml", [f"data.path={mnist}"]),
    ):
        text, found = _no_defense_section(name, config, overrides, root)
        sections.append(text)
        verdicts += found
    regime = _regime_section(mnist, root)
    sweep_text = [_sweep_section(name, mnist, root, img_dir) for name in sweeps]
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
            f"in {time.time() - start:.0f}s on this project's 2-CPU machine. Do not edit by hand: rerun the command. "
            "What the numbers mean, and where the paper's claim holds, is in "
            "[reading-the-results.md](reading-the-results.md).",
            "## The claims checked\n\n" + "\n".join(verdicts),
            "## Attacks without a defense: cut depth and per-epoch accuracy",
            *sections,
            "## Training regime: the same attacks on a more confident model\n\n" + regime,
            "## Defense sweeps (the paper's grids)",
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
    results = sub.add_parser("results", help="regenerate docs/results.md from fresh runs (about 20 minutes)")
    results.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    results.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    results.add_argument("--run-root", type=Path, default=Path("runs/results"))
    results.add_argument("--sweeps", help=f"comma-separated subset of {','.join(SWEEPS)}")
    results.set_defaults(func=_cmd_results)
