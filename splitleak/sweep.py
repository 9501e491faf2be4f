"""`splitleak sweep`: a grid over any config keys, times seeds; one full run per point and seed, then
statistics per point (mean, standard deviation, 95% interval) and plots.

    splitleak sweep --config RUN.yaml --grid label_party.defense.epsilon=0.1,1,10 \\
        --grid model.cut=layer1,layer2 --seeds 0,1,2 --run-dir runs/sweep

`--defense NAME --values v1,v2` (or a config's `sweep:` section) is the shorthand for a defense's
strengths plus a no-defense baseline. Runs go one after another, as `--jobs N` local processes, or as
tasks on a Ray cluster (`--backend ray`). `--resume` continues a sweep in its --run-dir, skipping the
runs that completed; `--force` replaces it.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from splitleak.config import ConfigError, load_config
from splitleak.runlog import claim_run_dir, write_json_atomic

__all__ = [
    "Point",
    "STRENGTH_KEY",
    "add_parser",
    "format_interval",
    "grid_points",
    "point_statistics",
    "run_sweep",
    "sweep_table",
]

# The config key that sets each defense's strength.
STRENGTH_KEY = {
    "dp_sgd": "epsilon",
    "label_dp": "epsilon",
    "grad_compression": "fraction",
    "marvell": "scale",
    "none": None,
}
# Figures of a run that get statistics per point (besides every attack × data × phase at the last epoch).
HEADLINE_FIGURES = (
    "test_accuracy",
    "leakage.train",
    "leakage.best_snapshot",
    "leakage.inference",
    "time_to_leak.round",
    "epsilon",
)


@dataclass(frozen=True)
class Point:
    """One point of the grid: the settings (config key -> value) its runs share."""

    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Returns a directory-safe name made of the settings, e.g. defense.epsilon-0.5__model.cut-layer1."""
        if not self.settings:
            return "base"
        parts = []
        for key, value in self.settings.items():
            short = key.removeprefix("label_party.")
            parts.append(f"{short}-{value}")
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "__".join(parts))

    @property
    def short(self) -> str:
        """Returns the point as a person names it: "no defense", "marvell scale=0.1", "top_layers=2 momentum=0.9"."""
        settings = dict(self.settings)
        defense = settings.pop("label_party.defense.name", None)
        words = [
            f"{key.rsplit('.', 1)[-1]}={value:g}" if isinstance(value, float) else f"{key.rsplit('.', 1)[-1]}={value}"
            for key, value in settings.items()
            if not (key.startswith("label_party.defense.") and defense == "none")
        ]
        if defense is not None:
            strength = [w for w in words if w.split("=")[0] in ("epsilon", "fraction", "scale")]
            words = [w for w in words if w not in strength]
            words.insert(0, "no defense" if defense == "none" else " ".join([defense, *strength]))
        return " ".join(words) or "base"

    def overrides(self) -> list[str]:
        return [f"{key}={json.dumps(value)}" for key, value in self.settings.items()]


def _values(raw: str) -> list[Any]:
    """Returns comma-separated values parsed as YAML (numbers stay numbers); raises ConfigError on bad ones."""
    values = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"empty value in {raw!r}")
        try:
            values.append(yaml.safe_load(item))
        except yaml.YAMLError:
            raise ConfigError(f"value {item!r} is not valid YAML") from None
    return values


def grid_points(
    grid: list[tuple[str, list[Any]]],
    *,
    defense: str | None = None,
    values: list[Any] | None = None,
    baseline: bool = True,
) -> list[Point]:
    """Returns the points of a sweep: the product of the grid, each with the defense's strengths (and a
    no-defense baseline) when a defense is named."""
    axes = [[(key, v) for v in vals] for key, vals in grid]
    base = [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]
    if not defense:
        return [Point(settings) for settings in base]
    if defense not in STRENGTH_KEY or defense == "none":
        raise ConfigError(
            f"--defense must be one of {', '.join(k for k in STRENGTH_KEY if k != 'none')}, got {defense!r}"
        )
    if not values:
        raise ConfigError(f"name the strengths of {defense}: --values v1,v2 (or the config's sweep.values)")
    key = f"label_party.defense.{STRENGTH_KEY[defense]}"
    points = []
    for settings in base:
        if baseline:
            points.append(Point({**settings, "label_party.defense.name": "none"}))
        points += [Point({**settings, "label_party.defense.name": defense, key: v}) for v in values]
    return points


# -- one run ----------------------------------------------------------------------------------


def execute_run(config_tree: dict, transport: str) -> dict:
    """Runs one configured run (a config as a dict of sections) and returns its summary.

    A top-level function of plain data, so that a process pool or a Ray task can run it anywhere.
    """
    from splitleak.config import parse_config
    from splitleak.runner import run_demo, run_in_process

    config = parse_config(config_tree)
    return run_in_process(config) if transport == "inproc" else run_demo(config)


def _ray_task(config_tree: dict, transport: str) -> tuple[dict, bytes]:
    """Runs one run in a scratch directory on a Ray worker; returns its summary and its run dir as a tarball."""
    import io
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="splitleak-") as scratch:
        tree = json.loads(json.dumps(config_tree))
        tree["run"]["dir"] = str(Path(scratch) / "run")
        summary = execute_run(tree, transport)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(tree["run"]["dir"], arcname=".")
        return summary, buffer.getvalue()


def _unpack(tarball: bytes, run_dir: Path) -> None:
    import io
    import tarfile

    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        tar.extractall(run_dir, filter="data")


def _row(point: Point, seed: int, run_dir: Path, summary: dict) -> dict:
    """Returns one run's row: its settings, seed, task, verdict, and the last epoch's accuracy of every attack."""
    defense = summary.get("defense") or {}
    name = defense.get("name") or point.settings.get("label_party.defense.name")
    strength_key = STRENGTH_KEY.get(name)
    verdict = summary.get("leakage") or {}
    task = summary.get("task") or {}
    row = {
        "point": point.label,
        "name": point.short,
        "settings": dict(point.settings),
        "seed": seed,
        "run_dir": str(run_dir),
        "defense": name,
        "strength": point.settings.get(f"label_party.defense.{strength_key}") if strength_key else None,
        "epsilon": defense.get("epsilon"),
        "test_accuracy": task.get("test_accuracy"),
        "failure": task.get("failure"),
        "leakage.train": (verdict.get("train") or {}).get("accuracy"),
        "leakage.best_snapshot": (verdict.get("best_snapshot") or {}).get("accuracy"),
        "leakage.inference": (verdict.get("inference") or {}).get("accuracy"),
        "leakage.inference_attack": (verdict.get("inference") or {}).get("attack"),
        "time_to_leak.round": (verdict.get("time_to_leak") or {}).get("round"),
        "cumulative.per_epoch": [e["accuracy"] for e in verdict.get("per_epoch", [])],
    }
    train_epochs = [r["epoch"] for r in summary.get("attacks", []) if r["phase"] == "train"]
    last = max(train_epochs) if train_epochs else None
    for r in summary.get("attacks", []):
        if r["phase"] == "infer" or r["epoch"] == last:
            row[f"{r['attack']}.{r['data']}.{r['phase']}"] = r["accuracy"]
    return row


# -- statistics -------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict:
    """Returns mean, standard deviation (n - 1) and the 95% t-interval of the mean (SciPy) of values."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": n}
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    if std == 0:
        return {"mean": mean, "std": 0.0, "ci95": [mean, mean], "n": n}
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=std / n**0.5)
    return {"mean": mean, "std": std, "ci95": [float(low), float(high)], "n": n}


def point_statistics(rows: list[dict]) -> list[dict]:
    """Returns one entry per point: its settings and, for every figure its runs have, mean, std and ci95."""
    points: dict[str, list[dict]] = {}
    for row in rows:
        points.setdefault(row["point"], []).append(row)
    out = []
    for label, runs in points.items():
        figures = {}
        keys = [k for k in runs[0] if k in HEADLINE_FIGURES or k.count(".") == 2]
        for key in keys:
            values = [
                r.get(key) for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            ]
            if values:
                figures[key] = _stats([float(v) for v in values])
        epochs = max(len(r["cumulative.per_epoch"]) for r in runs)
        for epoch in range(epochs):
            values = [r["cumulative.per_epoch"][epoch] for r in runs if len(r["cumulative.per_epoch"]) > epoch]
            values = [v for v in values if v is not None]
            if values:
                figures[f"cumulative.epoch{epoch}"] = _stats(values)
        out.append(
            {
                "point": label,
                "name": runs[0].get("name", label),
                "settings": runs[0]["settings"],
                "defense": runs[0]["defense"],
                "strength": runs[0]["strength"],
                "seeds": [r["seed"] for r in runs],
                "failures": sum(1 for r in runs if r["failure"]),
                "figures": figures,
            }
        )
    return out


# -- the sweep --------------------------------------------------------------------------------


def _done(run_dir: Path, point: Point, seed: int) -> dict | None:
    """Returns the summary of a completed run of this point and seed in run_dir (None: run it)."""
    marker, summary = run_dir / "sweep_point.json", run_dir / "summary.json"
    if not (marker.exists() and summary.exists()):
        return None
    try:
        recorded, data = json.loads(marker.read_text()), json.loads(summary.read_text())
    except ValueError:
        return None
    if recorded != {"settings": point.settings, "seed": seed} or not data.get("complete"):
        return None
    return data


def run_sweep(
    config_path: Path | None,
    overrides: list[str],
    *,
    points: list[Point],
    seeds: list[int],
    transport: str,
    run_dir: Path,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
) -> list[dict]:
    """Returns one row per (point, seed) after running the runs not already complete in run_dir, and writes
    sweep.json ({"title", "runs", "points"}), sweep.csv (one row per run), sweep_epochs.csv and report.html."""
    base = load_config(config_path, overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Marks the directory as a sweep's from its first run on (sweep.json comes at the end).
    write_json_atomic(
        run_dir / "sweep_plan.json", {"points": [p.settings for p in points], "seeds": seeds, "overrides": overrides}
    )
    todo: list[tuple[Point, int, Path, dict]] = []
    rows: dict[tuple[str, int], dict] = {}
    for point in points:
        for seed in seeds:
            sub = run_dir / point.label / f"seed-{seed}"
            run_overrides = [
                *overrides,
                *point.overrides(),
                f"run.seed={seed}",
                f"run.id={point.label[:60] or 'run'}-s{seed}",
                f"run.dir={sub}",
                "feature_party.progress=false",
                "run.log_level=WARNING",
            ]
            config = load_config(config_path, run_overrides)  # every run's config is checked before any starts
            previous = _done(sub, point, seed)
            if previous is not None:
                rows[(point.label, seed)] = _row(point, seed, sub, previous)
            else:
                todo.append((point, seed, sub, config.model_dump(mode="json")))
    total = len(points) * len(seeds)
    if rows:
        print(
            f"sweep: {len(rows)} of {total} runs already complete in {run_dir}; running the other {len(todo)}",
            file=sys.stderr,
            flush=True,
        )

    start = time.time()

    def finished(point: Point, seed: int, sub: Path, summary: dict) -> None:
        write_json_atomic(sub / "sweep_point.json", {"settings": point.settings, "seed": seed})
        rows[(point.label, seed)] = _row(point, seed, sub, summary)
        elapsed = time.time() - start
        print(
            f"sweep {len(rows)}/{total} [{int(elapsed // 60)}m{int(elapsed % 60):02d}s]: {point.label} seed {seed}: "
            f"{summary.get('headline', '')}",
            file=sys.stderr,
            flush=True,
        )

    for point, seed, sub, _ in todo:
        if sub.exists():
            import shutil

            shutil.rmtree(sub)  # an interrupted run's files would mix with the new run's
    if backend == "ray":
        _run_on_ray(todo, transport, finished, address=address, cpus=cpus_per_run, gpus=gpus_per_run)
    elif jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # Fresh interpreters (spawn): a forked copy of a process with torch's thread pools can hang.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(execute_run, tree, transport): (p, s, d) for p, s, d, tree in todo}
            for future in as_completed(futures):
                point, seed, sub = futures[future]
                finished(point, seed, sub, future.result())
    else:
        for point, seed, sub, tree in todo:
            finished(point, seed, sub, execute_run(tree, transport))
    ordered = [rows[(p.label, s)] for p in points for s in seeds]
    _write(ordered, run_dir, title=f"{base.data.name}: " + ", ".join(sorted({k for p in points for k in p.settings})))
    if todo:
        print(f"sweep: {len(todo)} runs in {time.time() - start:.0f}s", file=sys.stderr, flush=True)
    return ordered


def _run_on_ray(todo, transport, finished, *, address, cpus, gpus) -> None:
    """Runs each (point, seed) as a Ray task; results come back through Ray's object store."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'splitleak[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A local instance: loopback only, no dashboard, no usage report.
            ray.init(
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                log_to_driver=False,
                num_cpus=max(1, int(os.cpu_count() or 1)),
            )
    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(_ray_task)
    pending = {task.remote(tree, transport): (point, seed, sub) for point, seed, sub, tree in todo}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                point, seed, sub = pending.pop(ref)
                summary, tarball = ray.get(ref)
                _unpack(tarball, sub)
                summary = json.loads((sub / "summary.json").read_text())
                finished(point, seed, sub, summary)
    finally:
        if started_here:
            ray.shutdown()


def _write(rows: list[dict], run_dir: Path, *, title: str) -> None:
    """Writes sweep.json (every run, statistics per point), sweep.csv (one row per run), sweep_epochs.csv
    (every attack at every epoch of every run) and the sweep's report."""
    from splitleak.report import write_sweep_report

    run_dir.mkdir(parents=True, exist_ok=True)
    points = point_statistics(rows)
    write_json_atomic(run_dir / "sweep.json", {"title": title, "runs": rows, "points": points})
    flat = [
        {**{f"setting:{k}": v for k, v in r["settings"].items()}, **{k: v for k, v in r.items() if k != "settings"}}
        for r in rows
    ]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    with open(run_dir / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    with open(run_dir / "sweep_epochs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["point", "seed", "epoch", "phase", "attack", "data", "accuracy", "n"])
        for r in rows:
            summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
            for a in summary.get("attacks", []):
                writer.writerow(
                    [r["point"], r["seed"], a["epoch"], a["phase"], a["attack"], a["data"], a["accuracy"], a["n"]]
                )
    write_sweep_report(run_dir)


def format_interval(stats: dict | None) -> str:
    """Returns "mean ± half-width" of a figure's statistics (the 95% t-interval), or the mean alone."""
    if not stats:
        return "–"
    if not stats.get("ci95"):
        return f"{stats['mean']:.3f}"
    half = (stats["ci95"][1] - stats["ci95"][0]) / 2
    return f"{stats['mean']:.3f} ± {half:.3f}"


def sweep_table(points: list[dict]):
    """Returns the table printed at the end of a sweep: one row per point, means ± 95% half-widths."""
    from rich import box
    from rich.table import Table

    def cell(p, key):
        return format_interval(p["figures"].get(key))

    table = Table(box=box.SIMPLE_HEAD, title="sweep: mean ± 95% half-width over seeds")
    for name in ("point", "seeds", "task", "leaked (cumulative)", "leaked (inference)", "diverged"):
        table.add_column(name, justify="left" if name == "point" else "right", overflow="fold")
    for p in points:
        table.add_row(
            p.get("name", p["point"]),
            str(len(p["seeds"])),
            cell(p, "test_accuracy"),
            cell(p, "leakage.train"),
            cell(p, "leakage.inference"),
            str(p.get("failures", 0)),
        )
    return table


# -- command line -----------------------------------------------------------------------------


def _cmd_sweep(args) -> int:
    try:
        grid = []
        for item in args.grid or []:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--grid takes key=v1,v2,..., got {item!r}")
            grid.append((key.strip(), _values(raw)))
        base = load_config(args.config, args.overrides)
        defense = args.defense or (None if grid else base.sweep.defense)
        values = _values(args.values) if args.values else (None if args.defense or grid else base.sweep.values)
        if args.defense and not values:
            values = base.sweep.values
        points = grid_points(grid, defense=defense, values=values, baseline=not args.no_baseline)
        if not grid and not defense:
            raise ConfigError(
                "nothing to sweep: --grid key=v1,v2 (or --defense NAME --values v1,v2, or a sweep: section)"
            )
        try:
            seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [base.run.seed]
        except ValueError:
            raise ConfigError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
        for point in points:  # every point's config is valid before the directory is touched
            load_config(args.config, [*args.overrides, *point.overrides()])
        claim_run_dir(args.run_dir, force=args.force, resume=args.resume, what="sweep")
        rows = run_sweep(
            args.config,
            args.overrides,
            points=points,
            seeds=seeds,
            transport=args.transport,
            run_dir=args.run_dir,
            jobs=args.jobs,
            backend=args.backend,
            address=args.address,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
        )
    except ValueError as err:
        print(f"splitleak sweep: {err}", file=sys.stderr)
        return 2
    from splitleak.inspect import wide_console

    if not args.quiet:
        wide_console().print(sweep_table(point_statistics(rows)))
    print(f"wrote {args.run_dir}/report.html, sweep.json, sweep.csv, sweep_epochs.csv")
    return 0


def add_parser(sub, parents=()) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="one run per grid point and seed; statistics per point, CSV, JSON and a report",
        parents=list(parents),
    )
    sweep.add_argument("--config", type=Path, help="run YAML file (default: configs/demo.yaml)")
    sweep.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="a config key and its values (repeatable)")
    sweep.add_argument("--seeds", help="comma-separated run.seed values (default: the config's)")
    sweep.add_argument("--defense", help="shorthand: dp_sgd, label_dp, grad_compression or marvell, with --values")
    sweep.add_argument("--values", help="the defense's strengths, comma-separated (default: the config's sweep.values)")
    sweep.add_argument("--no-baseline", action="store_true", help="with --defense: skip the no-defense point")
    sweep.add_argument(
        "--transport",
        choices=["processes", "inproc"],
        default="processes",
        help="three processes per run (default) or one process, same numbers for the same seed",
    )
    sweep.add_argument("--jobs", type=int, default=1, help="local backend: runs at a time (processes)")
    sweep.add_argument("--backend", choices=["local", "ray"], default="local", help="where the runs go")
    sweep.add_argument("--address", help="ray: the cluster's HOST:PORT or auto (default: a local instance)")
    sweep.add_argument("--cpus-per-run", type=float, default=1.0, help="ray: CPUs each run reserves")
    sweep.add_argument("--gpus-per-run", type=float, default=0.0, help="ray: GPUs each run reserves")
    sweep.add_argument("--run-dir", type=Path, default=Path("runs/sweep"), help="where the runs and tables go")
    sweep.add_argument(
        "--resume", action="store_true", help="continue the sweep in --run-dir: run only what has not completed"
    )
    sweep.add_argument("--force", action="store_true", help="replace the sweep already in --run-dir")
    sweep.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for every run")
    sweep.set_defaults(func=_cmd_sweep)
