"""`splitleak results`: regenerates docs/results.md (and its plots) from runs it makes now.

Every number in that file comes from a run this command starts; nothing is
typed by hand. Runs use the in-process transport, which gives the same numbers
as three processes for the same seed and thread setting (tests/test_e2e.py),
and go through `splitleak sweep`'s machinery (two at a time by default: the
same numbers as one after another). The headline of every run is the
cumulative attacker's (summary.json "leakage"); the single attacks' per-epoch
snapshots are shown beside it.
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
from splitleak.sweep import format_interval

__all__ = ["add_parser", "generate", "snapshot_shortfalls"]

REPO = Path(__file__).resolve().parent.parent
ATTACK_COLUMNS = (
    "distance.grad",
    "kmeans_seeded.grad",
    "kmeans_hungarian.grad",
    "distance.smashed",
    "kmeans_seeded.smashed",
    "kmeans_hungarian.smashed",
    "cross_kmeans.both",
)
INFER_COLUMNS = ("distance", "kmeans_seeded", "train_centroids", "train_knn")
SWEEPS = ("dp_sgd", "dp_sgd_top_only", "dp_sgd_authors", "label_dp", "label_dp_learned", "grad_compression", "marvell")
LEAK_THRESHOLD = 0.99
# How far the cumulative attacker may sit below the best single snapshot (issue 7's bar).
SNAPSHOT_TOLERANCE = 0.005
# Seeds of the tables that report mean and 95% interval: five where a run takes seconds, three for the
# MNIST defense grids (four grids of six points; five seeds would double an already long command).
SEEDS = (0, 1, 2, 3, 4)
SWEEP_SEEDS = {"marvell": SEEDS, "grad_compression": SEEDS}
DEFAULT_SWEEP_SEEDS = (0, 1, 2)


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
    return [
        lead
        + [str(epoch), _fmt(cumulative[epoch])]
        + [_fmt(_accuracy(summary, *key.split("."), "train", epoch)) for key in ATTACK_COLUMNS]
        for epoch in range(len(cumulative))
    ]


EPOCH_HEADER = ["epoch", "**cumulative**"] + [k.replace(".", " / ") for k in ATTACK_COLUMNS]


class _Report:
    """Runs the grids the doc reports (through splitleak sweep) and keeps every run, for the checks on all."""

    def __init__(self, root: Path, jobs: int) -> None:
        self.root = root
        self.jobs = jobs
        self.runs: list[tuple[str, dict]] = []
        self.verdicts: list[str] = []

    def grid(
        self, name: str, config: Path, overrides: list[str], points, seeds
    ) -> tuple[list[dict], list[dict], dict[tuple[str, int], dict]]:
        """Returns (rows, point statistics, summaries by (point, seed)) of one grid."""
        from splitleak.sweep import point_statistics, run_sweep

        print(f"results: {name}", file=sys.stderr, flush=True)
        rows = run_sweep(
            config,
            overrides,
            points=points,
            seeds=list(seeds),
            transport="inproc",
            run_dir=self.root / name,
            jobs=self.jobs,
        )
        summaries = {}
        for row in rows:
            summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
            summaries[(row["point"], row["seed"])] = summary
            self.runs.append((f"{name}, {row['point']}, seed {row['seed']}", summary))
        return rows, point_statistics(rows), summaries

    def verdict(self, claim: str, holds: bool, detail: str) -> None:
        self.verdicts.append(f"- {claim}: **{'yes' if holds else 'no'}** ({detail})")


def _no_defense_section(name: str, config_path: Path, overrides: list[str], seeds, report: _Report) -> str:
    from splitleak.sweep import grid_points

    digits = "digits" in name
    points = grid_points([("model.top_layers", [1, 2, 3])])
    rows, stats, summaries = report.grid(name.split()[0] + "-no-defense", config_path, overrides, points, seeds)
    epoch_rows, infer_rows = [], []
    for point in points:
        summary = summaries[(point.label, seeds[0])]
        layers = point.settings["model.top_layers"]
        epoch_rows += _epoch_rows(summary, [str(layers)])
        inference = [_accuracy(summary, a, "smashed", "infer", None) for a in INFER_COLUMNS]
        verdict = summary["leakage"]
        infer_rows.append(
            [str(layers), _fmt(summary["task"]["test_accuracy"])]
            + [_fmt(v) for v in inference]
            + [f"{_fmt(verdict['inference']['accuracy'])} ({verdict['inference']['attack']})", _leak_round(summary)]
        )
        for seed in seeds:
            summary = summaries[(point.label, seed)]
            cumulative = _cumulative(summary)
            test = summary["task"]["test_accuracy"]
            where = f"{name}, {layers}-layer top, seed {seed}"
            if digits:
                short = snapshot_shortfalls(summary, tolerance=0.0)
                report.verdict(
                    f"{where}, cumulative attacker >= the best single attack at that or an earlier epoch, every epoch",
                    not short,
                    "; ".join(short) or f"lowest epoch {min(cumulative):.3f}",
                )
            else:
                report.verdict(
                    f"{where}, cumulative attacker >= {LEAK_THRESHOLD} in every epoch",
                    min(cumulative) >= LEAK_THRESHOLD,
                    f"lowest epoch {min(cumulative):.3f}",
                )
            best_infer = summary["leakage"]["inference"]["accuracy"]
            report.verdict(
                f"{where}, inference leakage >= task test accuracy - 0.01",
                best_infer >= test - 0.01,
                f"{best_infer:.3f} ({summary['leakage']['inference']['attack']}) vs test accuracy {test:.3f}",
            )
    shown = " ".join([str(config_path.relative_to(REPO)), *map(_shown, overrides), "model.top_layers=N"])
    text = (
        f"### {name}\n\nCommand of one run: `splitleak demo --config {shown}` (here in-process). "
        f"Seed {seeds[0]}, per epoch: accuracy over all training samples at each epoch end (one known sample per "
        "class). **cumulative** is the cumulative attacker (everything seen so far, both channels); the other "
        "columns are single attacks on that epoch alone:\n\n"
        + _table(["top layers", *EPOCH_HEADER], epoch_rows)
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
    if len(seeds) > 1:
        text += (
            f"\n\nOver seeds {', '.join(map(str, seeds))}: mean ± half-width of the 95% t-interval.\n\n"
            + _seed_table(stats, "top layers", lambda p: str(p["settings"]["model.top_layers"]))
        )
    return text


def _seed_table(stats: list[dict], first: str, label) -> str:
    epochs = sorted(
        {
            int(k.removeprefix("cumulative.epoch"))
            for p in stats
            for k in p["figures"]
            if k.startswith("cumulative.epoch")
        }
    )
    header = [first, "task test accuracy", "training leakage (cumulative, end)"]
    header += [f"cumulative, epoch {e}" for e in epochs]
    header += [
        "inference leakage",
        "time to leak (round)",
        "kmeans_seeded / grad (last epoch)",
        "kmeans_seeded / smashed (last epoch)",
    ]
    rows = []
    for p in stats:
        f = p["figures"]
        rows.append(
            [label(p), format_interval(f.get("test_accuracy")), format_interval(f.get("leakage.train"))]
            + [format_interval(f.get(f"cumulative.epoch{e}")) for e in epochs]
            + [
                format_interval(f.get("leakage.inference")),
                "–" if not f.get("time_to_leak.round") else f"{f['time_to_leak.round']['mean']:.0f}",
                format_interval(f.get("kmeans_seeded.grad.train")),
                format_interval(f.get("kmeans_seeded.smashed.train")),
            ]
        )
    return _table(header, rows)


def _regime_section(mnist: Path, report: _Report) -> str:
    from splitleak.sweep import grid_points

    config = REPO / "configs" / "mnist.yaml"
    points = grid_points([("train.lr", [0.05]), ("train.momentum", [0.9])])
    rows, stats, summaries = report.grid("mnist-momentum", config, [f"data.path={mnist}"], points, SEEDS)
    epoch_rows = []
    for seed in SEEDS:
        summary = summaries[(points[0].label, seed)]
        epoch_rows += _epoch_rows(summary, [str(seed), _fmt(summary["task"]["test_accuracy"])])
        lowest = min(_cumulative(summary))
        report.verdict(
            f"MNIST, SGD lr 0.05 momentum 0.9, seed {seed}, cumulative attacker >= {LEAK_THRESHOLD} in every epoch",
            lowest >= LEAK_THRESHOLD,
            f"lowest epoch {lowest:.3f}",
        )
    return (
        "Command: `splitleak sweep --config configs/mnist.yaml --grid train.lr=0.05 --grid train.momentum=0.9 "
        f"--seeds {','.join(map(str, SEEDS))}` (here in-process). The shipped config (SGD lr 0.03, no momentum) "
        "is the 1-layer row of the MNIST section.\n\n"
        + _table(["seed", "task test accuracy", *EPOCH_HEADER], epoch_rows)
        + f"\n\nOver the {len(SEEDS)} seeds: mean ± half-width of the 95% t-interval.\n\n"
        + _seed_table(stats, "training", lambda p: "SGD lr 0.05, momentum 0.9")
    )


SWEEP_KEYS = (
    "norm.grad.train",
    "direction.grad.train",
    "distance.grad.train",
    "kmeans_seeded.grad.train",
    "kmeans_seeded.smashed.train",
    "cross_kmeans.both.train",
    "kmeans_seeded.smashed.infer",
    "train_knn.smashed.infer",
)


def _sweep_section(name: str, mnist: Path, img_dir: Path, report: _Report) -> str:
    from splitleak.report import plot_strength, plot_task
    from splitleak.sweep import grid_points

    config_path = REPO / "configs" / "sweeps" / f"{name}.yaml"
    base = load_config(config_path)
    overrides = [f"data.path={mnist}"] if base.data.path else []
    seeds = SWEEP_SEEDS.get(name, DEFAULT_SWEEP_SEEDS)
    points = grid_points([], defense=base.sweep.defense, values=base.sweep.values)
    rows, stats, summaries = report.grid(f"sweep-{name}", config_path, overrides, points, seeds)
    title = f"{name} on {base.data.name}, {len(seeds)} seeds"
    plot_strength(stats, img_dir / f"sweep-{name}.png", title=title)
    plot_task(stats, img_dir / f"sweep-{name}-task.png", title=title)
    binary = any(r.get("norm.grad.train") is not None for r in rows)
    keys = [k for k in SWEEP_KEYS if binary or not k.startswith(("norm", "direction"))]
    table_rows = []
    for p in stats:
        f = p["figures"]
        failures = f"{p['failures']} of {len(p['seeds'])} diverged" if p["failures"] else None
        table_rows.append(
            [
                p["defense"],
                "–" if p["strength"] is None else f"{p['strength']:g}",
                "–" if not f.get("epsilon") else f"{f['epsilon']['mean']:.2f}",
                failures or format_interval(f.get("test_accuracy")),
                format_interval(f.get("leakage.train")),
                format_interval(f.get("leakage.best_snapshot")),
                format_interval(f.get("leakage.inference")),
                "–" if not f.get("time_to_leak.round") else f"{f['time_to_leak.round']['mean']:.0f}",
            ]
            + [format_interval(f.get(k)) for k in keys]
        )
        if name == "marvell" and p["strength"] is not None and p["strength"] <= 1:
            for seed in seeds:
                leak = summaries[(p["point"], seed)]["leakage"]["train"]["accuracy"]
                report.verdict(
                    f"breast_cancer, Marvell s={p['strength']:g}, seed {seed}, training leakage >= 0.95",
                    leak is not None and leak >= 0.95,
                    _fmt(leak),
                )
    table = _table(
        [
            "defense",
            "strength",
            "epsilon",
            "task test accuracy",
            "**training leakage** (cumulative, end)",
            "best single snapshot (picked with ground truth)",
            "inference leakage",
            "time to leak (round, mean)",
        ]
        + [k.replace(".", " / ") + " (last epoch)" if k.endswith("train") else k.replace(".", " / ") for k in keys],
        table_rows,
    )
    return (
        f"### {name}\n\nCommand: `splitleak sweep --config configs/sweeps/{name}.yaml --seeds "
        f"{','.join(map(str, seeds))}` (here `--transport inproc`). Mean ± half-width of the 95% t-interval over "
        f"{len(seeds)} seeds.\n\n{table}\n\n![{name} sweep against strength](img/sweep-{name}.png)\n\n"
        f"![{name} sweep against task accuracy](img/sweep-{name}-task.png)"
    )


def _cut_section(mnist: Path, img_dir: Path, report: _Report) -> str:
    from splitleak.data import load_dataset
    from splitleak.models import list_cuts
    from splitleak.report import plot_points
    from splitleak.sweep import grid_points

    config_path = REPO / "configs" / "cuts_simplenet.yaml"
    config = load_config(config_path, [f"data.path={mnist}"])
    dataset = load_dataset(config.data, 0)
    cuts = list_cuts(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    names = [c["cut"] for c in cuts]
    points = grid_points([("model.cut", names)])
    rows, stats, summaries = report.grid("cuts-simplenet", config_path, [f"data.path={mnist}"], points, (0,))
    plot_points(stats, img_dir / "cuts-simplenet.png", title="SimpleNet (width 0.25) on MNIST 32x32: every cut")
    table_rows = []
    for cut, point in zip(cuts, points):
        summary = summaries[(point.label, 0)]
        cumulative = _cumulative(summary)
        last = len(cumulative) - 1
        table_rows.append(
            [
                cut["cut"],
                "x".join(map(str, cut["shape"])),
                f"{cut['size']:,}",
                _fmt(summary["task"]["test_accuracy"]),
                _fmt(summary["leakage"]["train"]["accuracy"]),
                " / ".join(_fmt(v) for v in cumulative),
                _fmt((summary["leakage"].get("best_snapshot") or {}).get("accuracy")),
                _fmt(summary["leakage"]["inference"]["accuracy"]),
                _leak_round(summary),
            ]
            + [_fmt(_accuracy(summary, *key.split("."), "train", last)) for key in ATTACK_COLUMNS]
        )
    shown = " ".join(["configs/cuts_simplenet.yaml", _shown(f"data.path={mnist}")])
    return (
        f"Command: `splitleak sweep --config {shown} --grid model.cut={','.join(names)}` (here in-process); "
        "`splitleak cuts --config configs/cuts_simplenet.yaml` lists the cuts. "
        f"{config.data.max_samples:,} MNIST images at {config.data.image_size}x{config.data.image_size} "
        f"({config.train.epochs} epochs, seed 0); single attacks at the last epoch.\n\n"
        + _table(
            [
                "cut",
                "smashed shape",
                "values",
                "task test accuracy",
                "**training leakage**",
                "cumulative per epoch",
                "best single snapshot (picked with ground truth)",
                "inference leakage",
                "time to leak",
            ]
            + [k.replace(".", " / ") for k in ATTACK_COLUMNS],
            table_rows,
        )
        + "\n\n![cut sweep](img/cuts-simplenet.png)"
    )


def _versions() -> str:
    import numpy
    import sklearn
    import torch

    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {numpy.__version__}, scikit-learn {sklearn.__version__}"
    )


SECTIONS = ("no-defense", "momentum", "sweeps", "cuts")


def current_commit(outputs: tuple[Path, ...] = ()) -> str:
    """The short commit of this checkout, with "+changes" where tracked files other than outputs (this
    command's own: the results document and its plots, which an interrupted command leaves changed) differ."""
    excluded = []
    for path in outputs:
        try:
            excluded.append(f":(exclude){Path(path).resolve().relative_to(REPO.resolve())}")
        except ValueError:  # outside the checkout: git does not see it anyway
            pass
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    if head.returncode != 0 or not head.stdout.strip():
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


class Ledger:
    """What the header says about the runs behind the tables: the commit they were made at and the seconds
    each `splitleak results` over them took, kept in the run directory (results.json) as they go, so that a
    resumed command reports the time of the interrupted ones too, and never mixes two commits' runs."""

    FILE = "results.json"

    def __init__(self, root: Path, *, resume: bool, commit: str | None = None, outputs: tuple[Path, ...] = ()) -> None:
        from splitleak.config import ConfigError

        self.path = Path(root) / self.FILE
        commit = commit or current_commit(outputs)
        if not resume:
            self.commit, self.seconds = commit, []
        else:
            if not self.path.exists():
                raise ConfigError(
                    f"{root} has no {self.FILE}: the commit its runs were made at is unknown, so they cannot be "
                    "resumed; rerun with --force"
                )
            kept = json.loads(self.path.read_text())
            if kept["commit"] != commit or commit == "unknown" or commit.endswith("+changes"):
                raise ConfigError(
                    f"the runs in {root} were made at commit {kept['commit']} and this checkout is at {commit}: "
                    "resuming would put two codes' figures in one set of tables; rerun with --force"
                )
            self.commit, self.seconds = kept["commit"], list(kept["seconds"])
        self.seconds.append(0.0)
        self.start = time.time()
        self.tick()

    def tick(self) -> None:
        """Records this command's seconds so far (called after every section)."""
        self.seconds[-1] = round(time.time() - self.start, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"commit": self.commit, "seconds": self.seconds}) + "\n")

    def describe(self) -> str:
        total = sum(self.seconds)
        if len(self.seconds) == 1:
            return f"in {total:.0f}s"
        return (
            f"in {total:.0f}s over {len(self.seconds)} commands (an interrupted one resumed with --resume: "
            f"{', '.join(f'{s:.0f}s' for s in self.seconds)}; an interrupted command's time counts up to its "
            "last finished section)"
        )


def generate(
    out: Path, *, mnist: Path, root: Path, sweeps: tuple[str, ...] = SWEEPS, jobs: int = 2, resume: bool = False
) -> None:
    """Runs everything docs/results.md reports and writes it (plots under docs/img/)."""
    if not (mnist / "t10k-images-idx3-ubyte.gz").exists() and not (mnist / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(f"the MNIST IDX files are not in {mnist}: pass --mnist DIR")
    img_dir = out.parent / "img"
    ledger = Ledger(root, resume=resume, outputs=(out, img_dir))
    report = _Report(root, jobs)

    def section(text: str) -> str:
        ledger.tick()
        return text

    sections = [
        section(_no_defense_section("digits (MLP bottom)", REPO / "configs" / "demo.yaml", [], (0,), report)),
        section(
            _no_defense_section(
                "MNIST (CNN bottom)", REPO / "configs" / "mnist.yaml", [f"data.path={mnist}"], SEEDS, report
            )
        ),
    ]
    regime = section(_regime_section(mnist, report))
    sweep_text = [section(_sweep_section(name, mnist, img_dir, report)) for name in sweeps]
    cuts = section(_cut_section(mnist, img_dir, report))
    shortfalls = [(label, short) for label, summary in report.runs if (short := snapshot_shortfalls(summary))]
    report.verdict(
        f"every run below: the cumulative attacker never more than {100 * SNAPSHOT_TOLERANCE:.1f} points below "
        "the best single attack at that or an earlier epoch",
        not shortfalls,
        f"{len(report.runs)} runs checked"
        + (
            f", {len(shortfalls)} fall short: " + "; ".join(f"{lab}: {', '.join(s)}" for lab, s in shortfalls)
            if shortfalls
            else ""
        ),
    )
    ledger.tick()
    doc = "\n\n".join(
        [
            "# Results",
            f"Generated by `splitleak results` (`make results`) on {datetime.date.today()} at commit "
            f"{ledger.commit}, {ledger.describe()} on {_versions()}. Do not edit by hand: rerun the command. "
            "CNN figures may move by a few tenths of a point on other CPUs (float summation order): measured on "
            "another machine at the same commit, MNIST CNN figures differed by 0.1–0.2 points and the "
            "momentum-regime table by up to 12.5 points. "
            "What the numbers mean, and where the paper's claim holds, is in "
            "[reading-the-results.md](reading-the-results.md).",
            "Every run's headline is the **cumulative attacker**: one label estimate per training sample from "
            "everything the adversary saw so far (both channels, every epoch), with no ground truth "
            "([attacks.md](attacks.md)). An attacker keeps what it learnt, so this, not one epoch's snapshot of "
            "one attack, is what leaked. The single attacks are shown beside it. Where a table reports several "
            "seeds, it gives the mean ± the half-width of the 95% t-interval.",
            "## The claims checked\n\n" + "\n".join(report.verdicts),
            "## Attacks without a defense: cut depth and per-epoch accuracy",
            *sections,
            "## Training regime: the same attacks on a more confident model\n\n" + regime,
            "## Defense sweeps (the paper's grids)\n\nColumns: the task, the cumulative attacker at the last "
            "epoch (training leakage), the best inference attack, the first round at which the cumulative "
            "labelling reached 0.95, then single attacks at the last training epoch and on the inference pass.",
            *sweep_text,
            "## The paper's cut sweep: a convolutional model cut after every block\n\n" + cuts,
        ]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc + "\n")


def _cmd_results(args) -> int:
    from splitleak.runlog import claim_run_dir

    # Results come from runs of this code: a new command replaces the runs of an earlier one (--force);
    # --resume reuses the complete runs an interrupted one left (only at the same commit: Ledger checks).
    claim_run_dir(args.run_dir, force=args.force, resume=args.resume, what="set of results runs")
    generate(
        args.out,
        mnist=args.mnist,
        root=args.run_dir,
        sweeps=tuple(args.sweeps.split(",")) if args.sweeps else SWEEPS,
        jobs=args.jobs,
        resume=args.resume,
    )
    print(f"wrote {args.out}")
    return 0


def add_parser(sub, parents=()) -> None:
    results = sub.add_parser(
        "results",
        help="regenerate docs/results.md from fresh runs (53 to 105 minutes on 2 cores)",
        parents=list(parents),
    )
    results.add_argument("--out", type=Path, default=REPO / "docs" / "results.md", help="the results document to write")
    results.add_argument(
        "--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist", help="folder of the MNIST IDX files"
    )
    results.add_argument("--run-dir", type=Path, default=Path("runs/results"), help="where the runs behind it go")
    results.add_argument("--sweeps", help=f"comma-separated subset of {','.join(SWEEPS)}")
    results.add_argument("--jobs", type=int, default=2, help="runs at a time (the same numbers as one at a time)")
    results.add_argument(
        "--resume", action="store_true", help="reuse the complete runs in --run-dir (of an interrupted command)"
    )
    results.add_argument("--force", action="store_true", help="replace the runs already in --run-dir")
    results.set_defaults(func=_cmd_results)
