"""`splitleak sweep`: one full run per defense strength, then a table and a plot
of attack accuracy against task accuracy."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from splitleak.config import load_config

__all__ = ["STRENGTH_KEY", "add_parser", "plot_sweep", "run_sweep"]

# The config key that sets each defense's strength.
STRENGTH_KEY = {
    "dp_sgd": "epsilon",
    "label_dp": "epsilon",
    "grad_compression": "fraction",
    "marvell": "scale",
    "none": None,
}


def _row(defense: str, strength: float | None, summary: dict) -> dict:
    """Returns one sweep row: task accuracy, epsilon, and the last epoch's accuracy of every attack."""
    row = {
        "defense": defense,
        "strength": strength,
        "epsilon": (summary.get("defense") or {}).get("epsilon"),
        "test_accuracy": summary["task"]["test_accuracy"],
        "failure": summary["task"].get("failure"),
    }
    verdict = summary.get("leakage") or {}
    row["leakage.train"] = (verdict.get("train") or {}).get("accuracy")
    row["leakage.inference"] = (verdict.get("inference") or {}).get("accuracy")
    row["leakage.inference_attack"] = (verdict.get("inference") or {}).get("attack")
    row["time_to_leak.round"] = (verdict.get("time_to_leak") or {}).get("round")
    train_epochs = [r["epoch"] for r in summary["attacks"] if r["phase"] == "train"]
    last = max(train_epochs) if train_epochs else None
    for r in summary["attacks"]:
        if r["phase"] == "infer" or r["epoch"] == last:
            row[f"{r['attack']}.{r['data']}.{r['phase']}"] = r["accuracy"]
    return row


def run_sweep(
    config_path: Path | None,
    overrides: list[str],
    *,
    defense: str | None,
    values: list[float] | None,
    transport: str,
    out_dir: Path,
    baseline: bool = True,
) -> list[dict]:
    """Returns the sweep's rows after running one full run per value (and a no-defense baseline)."""
    from splitleak.runner import run_demo, run_in_process

    base = load_config(config_path, overrides)
    defense = defense or base.sweep.defense
    values = values if values is not None else base.sweep.values
    if not defense or defense == "none" or not values:
        raise ValueError("name a defense and its values: --defense NAME --values v1,v2 (or a sweep: section)")
    key = STRENGTH_KEY[defense]
    runs = ([("none", None)] if baseline else []) + [(defense, v) for v in values]
    rows = []
    for number, (name, value) in enumerate(runs, start=1):
        label = name if value is None else f"{name}-{value:g}"
        run_overrides = [
            *overrides,
            f"label_party.defense.name={name}",
            f"run.id={label}",
            f"run.dir={out_dir / label}",
            "feature_party.progress=false",
            "run.log_level=WARNING",
        ]
        if value is not None:
            run_overrides.append(f"label_party.defense.{key}={value}")
        config = load_config(config_path, run_overrides)
        print(f"sweep {number}/{len(runs)}: {label}", file=sys.stderr, flush=True)
        summary = run_in_process(config) if transport == "inproc" else run_demo(config)
        if summary.get("headline"):
            print(f"  {summary['headline']}", file=sys.stderr, flush=True)
        rows.append(_row(name, value, summary))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    plot_sweep(rows, out_dir / "sweep.png", title=f"{defense} on {base.data.name}")
    return rows


# The series a sweep plot shows: the attacks that matter, one style per data kind.
PLOTTED = (
    "cumulative.both.train",
    "distance.grad.train",
    "kmeans_seeded.grad.train",
    "norm.grad.train",
    "direction.grad.train",
    "distance.smashed.train",
    "kmeans_seeded.smashed.train",
    "kmeans_seeded.smashed.infer",
    "train_knn.smashed.infer",
)
STYLES = {"grad": "-", "smashed": "--", "both": "-"}


def plot_sweep(rows: list[dict], path: Path, *, title: str) -> None:
    """Draws attack accuracy against task accuracy, one line per attack × data × phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def weakest_first(row):
        if row["strength"] is None:
            return float("-inf")
        # A smaller epsilon is a stronger defense; a larger fraction or scale is.
        return -row["strength"] if STRENGTH_KEY[row["defense"]] == "epsilon" else row["strength"]

    rows = sorted(rows, key=weakest_first)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for key in PLOTTED:
        points = [
            (r["test_accuracy"], r[key]) for r in rows if r.get(key) is not None and r["test_accuracy"] is not None
        ]
        if not points:
            continue
        attack, data, phase = key.split(".")
        xs, ys = zip(*points)
        cumulative = attack == "cumulative"
        ax.plot(
            xs,
            ys,
            linestyle=":" if phase == "infer" else STYLES[data],
            marker="o",
            linewidth=3 if cumulative else 1.5,
            color="black" if cumulative else None,
            label="cumulative attacker (the leak)" if cumulative else f"{attack} / {data} / {phase}",
        )
    for r in rows:
        if r["test_accuracy"] is None:
            continue
        ax.annotate(
            "none" if r["strength"] is None else f"{r['strength']:g}",
            (r["test_accuracy"], 1.02),
            textcoords="offset points",
            xytext=(0, 2),
            ha="center",
            fontsize=7,
        )
    chance = [r.get("random.none.train") for r in rows if r.get("random.none.train") is not None]
    if chance:
        ax.axhline(sum(chance) / len(chance), color="grey", linestyle=":", label="random guess")
    ax.set_xlabel("task test accuracy")
    ax.set_ylabel("attack accuracy (last epoch; inference pass)")
    ax.set_ylim(0, 1.1)
    ax.set_title(f"{title}\n(lines run from no defense to the strongest; numbers on top: strength)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cmd_sweep(args) -> int:
    values = [float(v) for v in args.values.split(",")] if args.values else None
    try:
        rows = run_sweep(
            args.config,
            args.overrides,
            defense=args.defense,
            values=values,
            transport=args.transport,
            out_dir=args.out,
            baseline=not args.no_baseline,
        )
    except ValueError as err:
        print(f"splitleak sweep: {err}", file=sys.stderr)
        return 2
    for row in rows:
        print(json.dumps(row))
    print(f"wrote {args.out}/sweep.csv, sweep.json, sweep.png")
    return 0


def add_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="one run per defense strength; sweep.csv, sweep.json and a plot")
    sweep.add_argument("--config", type=Path)
    sweep.add_argument("--defense", help="dp_sgd, label_dp, grad_compression or marvell (default: the config's sweep)")
    sweep.add_argument("--values", help="comma-separated strengths (default: the config's sweep.values)")
    sweep.add_argument(
        "--transport",
        choices=["processes", "inproc"],
        default="processes",
        help="three processes per run (default) or one process, same numbers for the same seed",
    )
    sweep.add_argument("--out", type=Path, default=Path("runs/sweep"))
    sweep.add_argument("--no-baseline", action="store_true", help="skip the no-defense run")
    sweep.add_argument("overrides", nargs="*", metavar="key.sub=value")
    sweep.set_defaults(func=_cmd_sweep)
