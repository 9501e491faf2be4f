"""The `splitleak` command.

Conventions every subcommand keeps: a command that writes a run (or a set of runs) writes it to
--run-dir, and refuses a directory that already holds one unless --resume or --force; runs it reads are
positional; config overrides (key.sub=value) go anywhere on the line; -q prints only the verdict, -v
more. Exit codes: 0 done, 1 the run (or check) failed, 2 bad input (config, data, files, flags),
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from splitleak import PROTOCOL_VERSION, __version__
from splitleak.config import ConfigError, load_config

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="run YAML file (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, anywhere on the line")


def _verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="print only the verdict (and errors)")
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="more: progress of every step (-vv: debug logs too)"
    )


def _run_dir_of(args, overrides: list[str]) -> Path:
    return Path(args.run_dir) if args.run_dir else Path(load_config(args.config, overrides).run.dir)


def _demo(args) -> int:
    from splitleak.report import write_run_report
    from splitleak.runner import DemoError, run_demo

    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"data.name={args.dataset}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.run_dir:
        overrides.append(f"run.dir={args.run_dir}")
    if args.quiet:
        overrides += ["feature_party.progress=false", "run.log_level=WARNING"]
    elif args.verbose > 1:
        overrides.append("run.log_level=DEBUG")
    config_path = args.config
    if args.resume and config_path is None:
        # A resumed run goes on with the config it was started with (written to its run dir).
        config_path = _run_dir_of(args, overrides) / "config.yaml"
        if not config_path.exists():
            raise ConfigError(f"nothing to resume in {config_path.parent}: it holds no run (no config.yaml)")
    config = load_config(config_path, overrides)
    run_dir = Path(config.run.dir)
    try:
        summary = run_demo(config, resume=args.resume, force=args.force)
    except DemoError as err:
        print(f"splitleak demo: {err}", file=sys.stderr)
        return EXIT_FAILED
    report = write_run_report(run_dir)
    # A defense strong enough to stop training is a result, not a failed run: the summary says so.
    _print_summary(summary, run_dir, report, quiet=args.quiet)
    return EXIT_OK


def _print_summary(summary: dict, run_dir: Path, report: Path, *, quiet: bool = False) -> None:
    """Prints the one final summary of a run: the verdict, defense and task, the epoch table."""
    from splitleak.inspect import print_run, wide_console
    from splitleak.runlog import read_jsonl

    if quiet:
        print(summary.get("headline", ""))
        return
    records = list(read_jsonl(run_dir / "attack_log.jsonl"))
    print_run(records, summary, wide_console())
    print(f"report: {report}   (more: splitleak inspect {run_dir} --rounds)")


def _inspect(args) -> int:
    from splitleak.inspect import follow, print_records, wide_console

    if args.follow:
        return follow(args.run_dir, wide_console())
    print_records(args.run_dir, as_json=args.json, as_csv=args.csv, epochs_only=args.epochs, rounds=args.rounds)
    return EXIT_OK


def _summarize(args) -> int:
    from adversary.summary import summarize

    summary = summarize(args.run_dir)
    print(f"wrote {args.run_dir / 'summary.json'} from {args.run_dir / 'attack_log.jsonl'}")
    if summary.get("headline"):
        print(summary["headline"])
    if not summary["complete"]:
        print("the log has no finish record: the run did not finish (continue it with splitleak demo --resume)")
    return EXIT_OK


def _report(args) -> int:
    from splitleak.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    return EXIT_OK


def _compare(args) -> int:
    from rich import box
    from rich.table import Table

    from splitleak.inspect import wide_console
    from splitleak.report import compare_runs, plot_compare

    keys, rows = compare_runs(args.run_dirs)
    table = Table(box=box.SIMPLE_HEAD, title="runs side by side" + ("" if keys else " (same config)"))
    table.add_column("#", justify="right")
    table.add_column("run", overflow="fold")
    for key in keys:
        table.add_column(key, overflow="fold")
    for name in ("task", "leaked", "infer", "round ≥ thr."):
        table.add_column(name, justify="right")
    for i, row in enumerate(rows, 1):
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        table.add_row(
            str(i),
            row["run"],
            *[json.dumps(row["settings"][k]) for k in keys],
            fmt(row["task"]) + (" (diverged)" if row["failure"] else ""),
            fmt(row["leaked.train"]),
            fmt(row["leaked.inference"]),
            "never" if row["time_to_leak"] is None else str(row["time_to_leak"]),
        )
    wide_console().print(table)
    if args.out:
        print(f"wrote {plot_compare(rows, args.out)}")
    return EXIT_OK


def _attack(args) -> int:
    from adversary.replay import replay_run
    from splitleak.inspect import attack_rows_table, wide_console

    rows = replay_run(args.run_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table = attack_rows_table(rows, title=f"offline replay of {args.run_dir}", extra=("matches_live",))
        wide_console().print(table)
    return EXIT_OK if all(r["matches_live"] is not False for r in rows) else EXIT_FAILED


def _cuts(args) -> int:
    from rich import box
    from rich.table import Table

    from splitleak.data import load_dataset
    from splitleak.inspect import wide_console
    from splitleak.models import list_cuts

    config = load_config(args.config, args.overrides)
    dataset = load_dataset(config.data, config.run.seed)
    rows = list_cuts(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    model = config.model.arch or f"{config.model.bottom} bottom + {config.model.top_layers}-layer top"
    table = Table(
        title=f"cuts of {model} on {config.data.name} {list(dataset.input_shape)} (model.cut=NAME)", box=box.SIMPLE_HEAD
    )
    for column in ("cut", "smashed shape per sample", "values per sample"):
        table.add_column(column, justify="left" if column == "cut" else "right")
    for row in rows:
        mark = " (configured)" if row["cut"] == config.model.cut else ""
        table.add_row(row["cut"] + mark, "x".join(map(str, row["shape"])), f"{row['size']:,}")
    wide_console().print(table)
    return EXIT_OK


def _known_labels(args) -> int:
    from splitleak.runner import draw_known_labels

    count = draw_known_labels(load_config(args.config, args.overrides), args.out)
    print(f"wrote {count} known samples to {args.out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitleak",
        description="How much label privacy does split learning give? Runs, attacks and reads split-learning runs.",
        epilog="Exit codes: 0 done, 1 the run (or check) failed, 2 bad input, 130 interrupted.",
    )
    parser.add_argument(
        "--version", action="version", version=f"splitleak {__version__} (wire protocol {PROTOCOL_VERSION})"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run label party, adversary proxy and feature party as three processes")
    _add_config_args(demo)
    _verbosity(demo)
    demo.add_argument("--dataset", help="override data.name (digits, breast_cancer, mnist, ...)")
    demo.add_argument("--epochs", type=int, help="override train.epochs")
    demo.add_argument("--run-dir", type=Path, help="where the run goes (default: the config's run.dir)")
    demo.add_argument("--resume", action="store_true", help="continue the run in --run-dir after a crash")
    demo.add_argument("--force", action="store_true", help="replace the run already in --run-dir")
    demo.set_defaults(func=_demo)

    inspect = sub.add_parser("inspect", help="print a run's verdict and attack accuracy per epoch (or per round)")
    inspect.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")
    _verbosity(inspect)
    form = inspect.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the log's records as JSON lines, for machines")
    form.add_argument("--csv", action="store_true", help="one CSV row per attack result, for spreadsheets")
    form.add_argument("--follow", action="store_true", help="follow the run going on: one line per round")
    inspect.add_argument("--rounds", action="store_true", help="one line per round before the epoch table")
    inspect.add_argument("--epochs", action="store_true", help="--json/--csv: epoch-end records only")
    inspect.set_defaults(func=_inspect)

    report = sub.add_parser("report", help="write RUN_DIR/report.html: the verdict and plots (a run or a sweep)")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory or a sweep directory")
    _verbosity(report)
    report.set_defaults(func=_report)

    compare = sub.add_parser("compare", help="print (and plot) runs side by side: config differences and leakage")
    compare.add_argument(
        "run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories or sweep directories"
    )
    compare.add_argument("--out", type=Path, help="also draw the runs side by side into this PNG file")
    _verbosity(compare)
    compare.set_defaults(func=_compare)

    summarize = sub.add_parser(
        "summarize", help="rebuild RUN_DIR/summary.json from RUN_DIR/attack_log.jsonl (after a crash, or to check it)"
    )
    summarize.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")
    _verbosity(summarize)
    summarize.set_defaults(func=_summarize)

    attack = sub.add_parser("attack", help="replay the attacks offline on a run's captured tensors")
    attack.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run captured with adversary.capture: true")
    attack.add_argument("--json", action="store_true", help="the replayed rows as a JSON list")
    _verbosity(attack)
    attack.set_defaults(func=_attack)

    cuts = sub.add_parser("cuts", help="list where the configured model can be cut, with the smashed shape of each")
    _add_config_args(cuts)
    _verbosity(cuts)
    cuts.add_argument("--json", action="store_true", help="a JSON list of {cut, shape, size}")
    cuts.set_defaults(func=_cuts)

    known = sub.add_parser("known-labels", help="draw the attacker's known samples (sample_id,label CSV)")
    _add_config_args(known)
    _verbosity(known)
    known.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    known.set_defaults(func=_known_labels)

    from splitleak import bench, results, sweep

    for module in (sweep, bench, results):
        module.add_parser(sub, parents=[_verbosity_parent()])

    return parser


def _verbosity_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    _verbosity(parent)
    return parent


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parses argv, taking key.sub=value words as config overrides wherever they stand."""
    args, extra = parser.parse_known_args(argv)
    overrides = [word for word in extra if "=" in word and not word.startswith("-")]
    unknown = [word for word in extra if word not in overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        if not hasattr(args, "overrides"):
            parser.error(f"splitleak {args.command} takes no config overrides: {' '.join(overrides)}")
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    from splitleak.data import DataError

    # Piped into head: end quietly as Unix tools do, not with a BrokenPipeError traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = _parse(parser, argv)
    level = logging.WARNING
    if getattr(args, "quiet", False):
        level = logging.ERROR
    elif getattr(args, "verbose", 0):
        level = logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"splitleak {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"splitleak {args.command}: interrupted; every process it started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
