"""The `splitleak` command: demo, inspect, summarize, attack, cuts, known-labels, sweep, results, bench."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


from splitleak.config import ConfigError, load_config

__all__ = ["main"]


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="run YAML file (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def _demo(args) -> int:
    from splitleak.runner import DemoError, run_demo

    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"data.name={args.dataset}")
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    if args.run_dir:
        overrides.append(f"run.dir={args.run_dir}")
    config_path = args.config
    if args.resume and config_path is None:
        # A resumed run goes on with the config it was started with (written to its run dir).
        run_dir = Path(args.run_dir or load_config(None, overrides).run.dir)
        config_path = run_dir / "config.yaml"
        if not config_path.exists():
            print(f"splitleak demo: nothing to resume in {run_dir}: it holds no run (no config.yaml)", file=sys.stderr)
            return 2
    config = load_config(config_path, overrides)
    try:
        summary = run_demo(config, resume=args.resume)
    except DemoError as err:
        print(f"splitleak demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("splitleak demo: interrupted; all processes stopped", file=sys.stderr)
        return 130
    _print_summary(summary, Path(config.run.dir))
    return 0


def _print_summary(summary: dict, run_dir: Path) -> None:
    from splitleak.inspect import attack_rows_table, wide_console

    console = wide_console()
    task = summary.get("task") or {}
    if summary.get("headline"):
        console.print(summary["headline"], style="bold", markup=False, highlight=False)
    if task.get("failure"):
        console.print(f"[bold red]training stopped[/]: {task['failure']}")
    accuracy = task.get("test_accuracy")
    console.print(
        f"[bold]test accuracy[/] {'–' if accuracy is None else f'{accuracy:.4f}'} "
        f"({task.get('test_samples')} samples, {task.get('epochs')} epochs, "
        f"{summary['timing']['train_seconds']:.1f}s training)"
    )
    last = {}
    for row in summary.get("attacks", []):
        last[(row["attack"], row["data"], row["phase"])] = row
    if last:
        console.print(attack_rows_table(list(last.values()), title="attacks at the last epoch (and at inference)"))
    console.print(f"results in {run_dir}/ : summary.json, attack_log.jsonl  (splitleak inspect {run_dir})")


def _inspect(args) -> int:
    from splitleak.inspect import follow_records, print_records, records_table, wide_console

    if args.follow:
        console = wide_console()
        try:
            for record in follow_records(args.run_dir):
                if args.json:
                    print(json.dumps(record), flush=True)
                elif record.get("type") in ("round", "epoch"):
                    table = records_table([record], title=None)
                    console.print(table)
        except KeyboardInterrupt:
            pass
        return 0
    try:
        print_records(args.run_dir, as_json=args.json, epochs_only=args.epochs)
    except FileNotFoundError as err:
        print(f"splitleak inspect: {err}", file=sys.stderr)
        return 2
    return 0


def _summarize(args) -> int:
    from adversary.summary import summarize

    try:
        summary = summarize(args.run_dir)
    except FileNotFoundError as err:
        print(f"splitleak summarize: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.run_dir / 'summary.json'} from {args.run_dir / 'attack_log.jsonl'}")
    if summary.get("headline"):
        print(summary["headline"])
    if not summary["complete"]:
        print("the log has no finish record: the run did not finish (continue it with splitleak demo --resume)")
    return 0


def _attack(args) -> int:
    from adversary.replay import replay_run
    from splitleak.inspect import attack_rows_table, wide_console

    try:
        rows = replay_run(args.run_dir)
    except FileNotFoundError as err:
        print(f"splitleak attack: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table = attack_rows_table(rows, title=f"offline replay of {args.run_dir}", extra=("matches_live",))
        wide_console().print(table)
    return 0 if all(r["matches_live"] is not False for r in rows) else 3


def _cuts(args) -> int:
    from rich.table import Table

    from splitleak.data import load_dataset
    from splitleak.inspect import wide_console
    from splitleak.models import list_cuts

    config = load_config(args.config, args.overrides)
    dataset = load_dataset(config.data, config.run.seed)
    rows = list_cuts(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    model = config.model.arch or f"{config.model.bottom} bottom + {config.model.top_layers}-layer top"
    table = Table(title=f"cuts of {model} on {config.data.name} {list(dataset.input_shape)} (model.cut=NAME)")
    for column in ("cut", "smashed shape per sample", "values per sample"):
        table.add_column(column, justify="left" if column == "cut" else "right")
    for row in rows:
        mark = " (configured)" if row["cut"] == config.model.cut else ""
        table.add_row(row["cut"] + mark, "x".join(map(str, row["shape"])), f"{row['size']:,}")
    wide_console().print(table)
    return 0


def _known_labels(args) -> int:
    from splitleak.runner import draw_known_labels

    count = draw_known_labels(load_config(args.config, args.overrides), args.out)
    print(f"wrote {count} known samples to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitleak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run label party, adversary proxy and feature party as three processes")
    _add_config_args(demo)
    demo.add_argument("--dataset", help="override data.name")
    demo.add_argument("--epochs", type=int, help="override train.epochs")
    demo.add_argument("--run-dir", type=Path, help="override run.dir")
    demo.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir after any of its processes died"
    )
    demo.set_defaults(func=_demo)

    inspect = sub.add_parser("inspect", help="print a run's per-round and per-epoch attack table")
    inspect.add_argument("run_dir", type=Path)
    inspect.add_argument("--json", action="store_true", help="one JSON record per line, for machines")
    inspect.add_argument("--epochs", action="store_true", help="epoch-end records only")
    inspect.add_argument("--follow", action="store_true", help="keep printing records while the run goes on")
    inspect.set_defaults(func=_inspect)

    summarize = sub.add_parser(
        "summarize", help="rebuild RUN_DIR/summary.json from RUN_DIR/attack_log.jsonl (after a crash, or to check it)"
    )
    summarize.add_argument("run_dir", type=Path)
    summarize.set_defaults(func=_summarize)

    attack = sub.add_parser("attack", help="replay the attacks offline on a run's captured tensors")
    attack.add_argument("run_dir", type=Path)
    attack.add_argument("--json", action="store_true")
    attack.set_defaults(func=_attack)

    cuts = sub.add_parser("cuts", help="list where the configured model can be cut, with the smashed shape of each")
    _add_config_args(cuts)
    cuts.add_argument("--json", action="store_true", help="a JSON list of {cut, shape, size}")
    cuts.set_defaults(func=_cuts)

    known = sub.add_parser("known-labels", help="draw the attacker's known samples (sample_id,label CSV)")
    _add_config_args(known)
    known.add_argument("--out", type=Path, required=True)
    known.set_defaults(func=_known_labels)

    from splitleak import bench, results, sweep

    bench.add_parser(sub)
    sweep.add_parser(sub)
    results.add_parser(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    from splitleak.data import DataError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError) as err:
        print(f"splitleak {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
