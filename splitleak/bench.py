"""`splitleak bench`: throughput of the transports and cost of the attacks.

Each command measures in one run and rewrites its own section of
docs/benchmarks.md, with the command that produced it.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from splitleak.config import ConfigError, load_config

__all__ = ["add_parser", "bench_attacks", "bench_transport", "update_doc"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def _machine() -> str:
    import torch

    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"


def update_doc(section: str, body: str, doc: Path = DOC) -> None:
    """Replaces the text between <!-- bench:SECTION --> markers in doc (the benchmarks doc unless named;
    appending the section if absent)."""
    begin, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nEvery table here is written by the command above it.\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def _grpc_form(config, *, proxy: bool, attacks: bool, cumulative: bool = True) -> float:
    """Returns the feature party's training seconds against real server processes."""
    from party_feature.link import GrpcLink
    from party_feature.party import build_feature_party
    from splitleak.runner import (
        drop_checkpoints,
        prepare_run_dir,
        start_servers,
        stop_processes,
        wait_servers,
        write_run_config,
    )

    adv = {"mode": "proxy" if proxy else "off"}
    if not cumulative:
        adv["attacks"] = config.adversary.attacks.model_copy(
            update={"cumulative": False, "labeller": "kmeans_seeded.grad", "per_round": ["distance"]}
        )
    config = config.model_copy(update={"adversary": config.adversary.model_copy(update=adv)})
    config = prepare_run_dir(config)
    if not attacks:
        config = config.model_copy(update={"adversary": config.adversary.model_copy(update={"known_labels": None})})
    procs = []
    try:
        address = start_servers(config, write_run_config(config), procs)
        config = config.model_copy(
            update={"feature_party": config.feature_party.model_copy(update={"label_party_address": address})}
        )
        link = GrpcLink(config)
        report = build_feature_party(config).run(link)
        link.close()
        wait_servers(procs, Path(config.run.dir))
    finally:
        stop_processes(procs, timeout_s=15)
    drop_checkpoints(config)
    return report.train_seconds


# The forms `bench transport` times, by the name of their run dir (--forms picks some).
TRANSPORT_FORMS = ("inproc", "grpc", "proxy", "proxy-attacks-single", "proxy-attacks")


def bench_transport(
    config_path: Path | None,
    overrides: list[str],
    run_root: Path,
    repeats: int = 3,
    only: list[str] | None = None,
) -> list[dict]:
    """Returns one row per form (in-process, gRPC direct, gRPC through the proxy with attacks off, then on):
    the median training seconds of `repeats` runs of each (only: the forms of these names, TRANSPORT_FORMS)."""
    from splitleak.data import load_dataset, split_ids
    from splitleak.runner import run_in_process

    base = load_config(config_path, overrides + ["feature_party.progress=false", "run.log_level=WARNING"])
    forms = [
        ("in-process", "inproc", None),
        ("gRPC direct", "grpc", dict(proxy=False, attacks=False)),
        ("gRPC via adversary proxy, attacks off", "proxy", dict(proxy=True, attacks=False)),
        (
            "gRPC via adversary proxy, live attacks on, cumulative attacker off",
            "proxy-attacks-single",
            dict(proxy=True, attacks=True, cumulative=False),
        ),
        ("gRPC via adversary proxy, live attacks on (all)", "proxy-attacks", dict(proxy=True, attacks=True)),
    ]
    if only:
        unknown = sorted(set(only) - set(TRANSPORT_FORMS))
        if unknown:
            raise ConfigError(f"--forms: unknown {', '.join(unknown)}; the forms are {', '.join(TRANSPORT_FORMS)}")
        forms = [form for form in forms if form[1] in only]
    rows = []
    timings: dict[str, list[float]] = {}
    # Forms take turns, round after round, so that a slow spell of the machine falls on all of them.
    for turn in range(repeats):
        for label, name, grpc_args in forms:
            config = base.model_copy(update={"run": base.run.model_copy(update={"dir": run_root / name, "id": name})})
            print(f"bench transport: {label} ({turn + 1}/{repeats}) ...", file=sys.stderr, flush=True)
            if grpc_args is None:
                off = config.model_copy(update={"adversary": config.adversary.model_copy(update={"mode": "off"})})
                # The bench claimed run_root; each turn replaces the form's run of the turn before.
                seconds = run_in_process(off, force=True)["timing"]["train_seconds"]
            else:
                seconds = _grpc_form(config, **grpc_args)
            timings.setdefault(label, []).append(seconds)
    for label, name, _ in forms:
        config = base
        seconds = statistics.median(timings[label])
        n = len(
            split_ids(
                len(load_dataset(config.data, config.run.seed).labels()),
                test_fraction=config.data.test_fraction,
                seed=config.run.seed,
            ).train_ids
        )
        steps = -(-n // config.train.batch_size) * config.train.epochs
        rows.append(
            {
                "form": label,
                "train_seconds": round(seconds, 2),
                "runs": " ".join(f"{t:.2f}" for t in timings[label]),
                "rounds_per_s": round(steps / seconds, 1),
                "samples_per_s": round(n * config.train.epochs / seconds, 1),
            }
        )
    return rows


def cumulative_cost(run_dir: Path) -> dict:
    """Returns what the cumulative attacker cost in a run, from its attack log: per round and per epoch end."""
    from splitleak.runlog import read_jsonl

    per_round, refits, per_epoch = [], [], []
    for record in read_jsonl(run_dir / "attack_log.jsonl"):
        for entry in record.get("attacks", []):
            if entry["attack"] != "cumulative":
                continue
            if record["type"] == "round":
                (refits if entry.get("refit") else per_round).append(entry["seconds"])
            else:
                per_epoch.append(entry["seconds"])
    return {
        "rounds": len(per_round) + len(refits),
        "median_round_ms": round(1000 * statistics.median(per_round), 2) if per_round else None,
        "refits": len(refits),
        "median_refit_ms": round(1000 * statistics.median(refits), 1) if refits else None,
        "total_refit_s": round(sum(refits), 2),
        "epochs": len(per_epoch),
        "median_epoch_end_s": round(statistics.median(per_epoch), 3) if per_epoch else None,
        "max_epoch_end_s": round(max(per_epoch), 3) if per_epoch else None,
    }


def bench_attacks(run_dir: Path, repeats: int) -> list[dict]:
    """Returns the median time of each epoch-level attack on the last captured epoch of a run."""
    import torch

    from adversary.engine import AttackEngine
    from splitleak.data import load_dataset, read_known_samples

    config = load_config(run_dir / "config.yaml")
    captures = sorted((run_dir / "tensors").glob("train-epoch-*.npz"))
    if not captures:
        raise FileNotFoundError(f"no captured epochs in {run_dir}/tensors: run a demo with adversary.capture=true")
    with np.load(captures[-1]) as f:
        ids, smashed, grad = f["ids"], torch.from_numpy(f["smashed"]), torch.from_numpy(f["grad"])
    known_ids, known_labels = read_known_samples(config.adversary.known_labels)
    num_classes = load_dataset(config.data, config.run.seed).num_classes
    rows = []
    for name in config.adversary.attacks.per_epoch:
        cfg = config.adversary.attacks.model_copy(update={"per_epoch": [name]})
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(repeats):
            engine = AttackEngine(
                cfg,
                known_ids=known_ids,
                known_labels=known_labels,
                num_classes=num_classes,
                device=config.adversary.device,
                seed=config.run.seed,
            )
            for result in engine.train_epoch(0, ids, smashed, grad):
                times.setdefault((result.attack, result.data), []).append(result.seconds)
        for (attack, data), values in times.items():
            rows.append(
                {
                    # The engine runs the cumulative attacker's epoch-end fit beside every single attack (with
                    # that attack's labelling among its candidates): its own row, named as such.
                    "attack": attack if attack == name else f"{attack} (beside {name})",
                    "data": data,
                    "samples": len(ids),
                    "dim": grad.shape[1],
                    "median_ms": round(statistics.median(values) * 1000, 2),
                }
            )
    return rows


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _cmd_transport(args) -> int:
    start = time.time()
    from splitleak.runlog import claim_run_dir

    only = args.forms.split(",") if args.forms else None
    unknown = sorted(set(only or ()) - set(TRANSPORT_FORMS))
    if unknown:
        raise ConfigError(f"--forms: unknown {', '.join(unknown)}; the forms are {', '.join(TRANSPORT_FORMS)}")
    claim_run_dir(args.run_dir, force=args.force, what="benchmark")
    rows = bench_transport(args.config, args.overrides, args.run_dir, repeats=args.repeats, only=only)
    cost = cumulative_cost(args.run_dir / "proxy-attacks") if (args.run_dir / "proxy-attacks").exists() else None
    command = (
        "splitleak bench transport"
        + (f" --config {args.config}" if args.config else "")
        + (f" --forms {args.forms}" if args.forms else "")
        + "".join(f" {o}" for o in args.overrides)
    )
    body = (
        f"## Training throughput: in-process vs gRPC vs gRPC through the adversary\n\n"
        f"Command: `{command}` (one run, {time.time() - start:.0f}s; machine: {_machine()})\n\n"
        f"Config: {args.config or 'configs/demo.yaml'}; train seconds as the feature party measures them, the "
        f"median of {args.repeats} runs of each form (the forms take turns; `runs` lists every run).\n\n"
        + _table(rows)
        + (
            "\n\nWhat the cumulative attacker cost in the run with all attacks on, from its attack log (the "
            "per-round update, the refits of every view while the first epoch's samples arrive, the epoch-end "
            "fit), all on the adversary's worker, off the forwarding path:\n\n" + _table([cost])
            if cost
            else ""
        )
    )
    print(body)
    if not args.no_doc:
        update_doc("transport" + (f"-{args.section}" if args.section else ""), body)
    return 0


def _cmd_synthetic(args) -> int:
    import json

    import torch

    from splitleak.bench_synthetic import bench_synthetic
    from splitleak.entry import device_name

    try:
        n, d, k = (int(v) for v in args.synthetic.split(","))
    except ValueError:
        print(
            f"splitleak bench attacks: --synthetic takes N,D,K (three integers), got {args.synthetic!r}",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    channels = args.channels.split(",")
    attacks = args.attacks.split(",") if args.attacks else None
    rows = bench_synthetic(
        n, d, k, attacks=attacks, channels=channels, seed=args.seed, repeats=args.repeats, device=args.device
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    command = (
        f"splitleak bench attacks --synthetic {args.synthetic} --channels {args.channels}"
        + (f" --attacks {args.attacks}" if args.attacks else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
    )
    keys = [
        "attack",
        "data",
        "seconds",
        "reference",
        "reference_seconds",
        "accuracy",
        "reference_accuracy",
        "agreement",
        "peak_rss_mb",
    ]
    table = _table([{key: row.get(key, "") if row.get(key) is not None else "–" for key in keys} for row in rows])
    total = rows[-1]
    body = (
        f"## Epoch-end attacks at {n:,} x {d:,}, {k} classes (synthetic)\n\n"
        f"Command: `{command}` (machine: {_machine()}, {torch.get_num_threads()} torch threads"
        + (f", attacks on {device_name(args.device)}" if args.device != "cpu" else "")
        + ").\n\n"
        f"Seconds are medians of {args.repeats} runs. All of them together (each once, the cumulative "
        f"attacker's fit included): {total['seconds']} s; peak RSS {total['peak_rss_mb']} MB for "
        f"{total['vectors_mb']} MB of vectors. Each reference runs the same computation on the same vectors "
        "(k-means from the same initial centroids); `agreement` is the share of samples both label alike "
        "(1.0: the same predictions).\n\n" + table
    )
    print(body)
    if not args.no_doc:
        update_doc(
            f"attacks-synthetic-{n}x{d}" + (f"-{args.device.split(':')[0]}" if args.device != "cpu" else ""), body
        )
    return 0


def _cmd_attacks(args) -> int:
    if args.synthetic:
        return _cmd_synthetic(args)
    rows = bench_attacks(args.run_dir, args.repeats)
    body = (
        f"## Attack cost on one epoch\n\n"
        f"Command: `splitleak bench attacks {args.run_dir} --repeats {args.repeats}` "
        f"(machine: {_machine()}); the run dir is a capture from "
        f"`splitleak demo --config configs/mnist.yaml` (last epoch).\n\n" + _table(rows)
    )
    print(body)
    if not args.no_doc:
        update_doc("attacks", body)
    return 0


def add_parser(sub, parents=()) -> None:
    bench = sub.add_parser("bench", help="measure throughput and attack cost; records them in docs/benchmarks.md")
    kinds = bench.add_subparsers(dest="kind", required=True)
    transport = kinds.add_parser(
        "transport", help="training throughput: in-process, gRPC, gRPC via the proxy", parents=list(parents)
    )
    transport.add_argument("--config", type=Path, help="run YAML file (default: configs/demo.yaml)")
    transport.add_argument("--run-dir", type=Path, default=Path("runs/bench"), help="where the benchmark's runs go")
    transport.add_argument("--force", action="store_true", help="replace the benchmark runs already in --run-dir")
    transport.add_argument("--section", default="", help="suffix for the doc section (several configs)")
    transport.add_argument("--repeats", type=int, default=3, help="runs of each form; the median is reported")
    transport.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    transport.add_argument("--forms", help=f"time only these forms (comma-separated: {','.join(TRANSPORT_FORMS)})")
    transport.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    transport.set_defaults(func=_cmd_transport)
    attacks = kinds.add_parser(
        "attacks",
        help="time of each epoch-level attack: on a captured epoch, or on synthetic vectors beside references",
        parents=list(parents),
    )
    attacks.add_argument(
        "run_dir",
        type=Path,
        nargs="?",
        default=Path("runs/mnist"),
        metavar="RUN_DIR",
        help="a run captured with adversary.capture (default: runs/mnist)",
    )
    attacks.add_argument(
        "--repeats", type=int, default=3, help="timings per attack (and reference); the median is kept"
    )
    attacks.add_argument("--synthetic", metavar="N,D,K", help="class-structured vectors: N samples, D dims, K classes")
    attacks.add_argument("--channels", default="grad,smashed", help="synthetic: data kinds to make and attack")
    attacks.add_argument("--attacks", help="synthetic: comma-separated attacks (default: every epoch-end attack)")
    attacks.add_argument("--threads", type=int, default=0, help="synthetic: torch CPU threads (default: all cores)")
    attacks.add_argument("--seed", type=int, default=0, help="synthetic: the vectors' seed")
    attacks.add_argument("--device", default="cpu", help="synthetic: where the attacks run (e.g. cuda:0)")
    attacks.add_argument("--json", action="store_true", help="synthetic: print the rows as a JSON list")
    attacks.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    attacks.set_defaults(func=_cmd_attacks)
