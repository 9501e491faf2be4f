"""What every process entry point shares: argument parsing, logging, readiness, signals."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from splitleak.config import ConfigError, RunConfig, apply_threads, load_config
from splitleak.runlog import ensure_run_dir
from splitleak.ui import setup_logging

__all__ = [
    "announce_ready",
    "check_device",
    "device_name",
    "exit_on_bad_input",
    "parse_process_args",
    "ready_port",
    "serve_until_done",
    "stop_event",
]


def parse_process_args(prog: str, description: str, argv: list[str] | None) -> tuple[RunConfig, argparse.Namespace]:
    """Returns the validated config and the arguments of a party or adversary process; exits 2 on a bad config."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, help="run YAML file (default: configs/demo.yaml)")
    parser.add_argument("--ready-file", type=Path, help="write {pid, port} here as JSON once serving")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in run.dir from the newest checkpoint every process holds",
    )
    parser.add_argument(
        "--supervised",
        action="store_true",
        help="started by splitleak demo, which prints the run's summary: print no final line of its own",
    )
    parser.add_argument(
        "--address-from",
        nargs=2,
        metavar=("READY_FILE", "KEY"),
        help="wait for another process's --ready-file, then set KEY to 127.0.0.1:PORT from it "
        "(splitleak demo starts all three processes at once this way, on loopback)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    args = parser.parse_args(argv)
    if args.address_from:
        ready, key = args.address_from
        args.overrides.append(f"{key}=127.0.0.1:{_wait_for_port(prog, Path(ready))}")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(prog, config.run.log_level)
    apply_threads(config)
    try:
        check_device(config, DEVICE_KEYS[prog])
        ensure_run_dir(Path(config.run.dir))
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.getLogger(prog).info("pid %d, run %s, config %s", os.getpid(), config.run.id, args.config or "demo")
    return config, args


# How long splitleak demo waits for a process to serve, and a process for the ready file of the one it calls.
READY_WAIT_S = 120.0


def ready_port(path: Path) -> int | None:
    """Returns the port a process wrote to its ready file (announce_ready), or None while there is none."""
    return int(json.loads(path.read_text())["port"]) if path.exists() else None


def _wait_for_port(prog: str, ready: Path) -> int:
    """Returns the port in another process's ready file once it is there; exits 1 if it never comes."""
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        port = ready_port(ready)
        if port is not None:
            return port
        time.sleep(0.05)
    print(f"{prog}: {ready} did not appear within {READY_WAIT_S:.0f}s: what it calls never served", file=sys.stderr)
    raise SystemExit(1)


# The device key each process runs on.
DEVICE_KEYS = {
    "party_label": "label_party.device",
    "party_feature": "feature_party.device",
    "adversary": "adversary.device",
}


def device_name(device) -> str:
    """Returns a device as a log line names it: "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def check_device(config: RunConfig, key: str) -> None:
    """Raises ConfigError when the device at config key (e.g. label_party.device) does not exist on this host."""
    import torch

    section, _, field = key.partition(".")
    name = getattr(getattr(config, section), field)
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{key} {name!r} is not a torch device ({err})") from None
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
        raise ConfigError(f"{key} is {name!r} but this host has no CUDA device ({build})")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"{key} is {name!r} but this host has {count} CUDA device(s): cuda:0..cuda:{count - 1}")


def announce_ready(path: Path | None, **info) -> None:
    """Writes {pid, **info} to path atomically, so a supervisor can read the bound port."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **info}))
    tmp.replace(path)


def stop_event() -> threading.Event:
    """Returns an event set on SIGTERM or SIGINT, so the process can stop cleanly."""
    event = threading.Event()

    def handle(signum, frame):
        logging.getLogger(__name__).info("received %s, stopping", signal.Signals(signum).name)
        event.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return event


def serve_until_done(
    stop: threading.Event,
    finished: threading.Event,
    *,
    exit_after_finish: bool,
    prog: str,
    failed: threading.Event | None = None,
    idle=None,
    idle_exit_s: float = 0.0,
) -> int:
    """Returns the process's exit code once a signal arrives (0), the run has finished and the process should
    exit after it (0), its work has failed (1), or its peer has been silent for idle_exit_s seconds (1;
    idle() returns the seconds since the last call)."""
    logger = logging.getLogger(prog)
    while not stop.wait(0.2):
        if exit_after_finish and finished.is_set():
            logger.info("run finished; exiting")
            return 0
        if failed is not None and failed.is_set():
            logger.error("exiting: the run cannot go on")
            return 1
        if idle_exit_s and idle is not None and idle() > idle_exit_s and not finished.is_set():
            logger.error("no call for %.0fs: the peer is gone; exiting (label_party.idle_exit_s)", idle())
            return 1
    return 0


def exit_on_bad_input(prog: str, build):
    """Returns build(); a dataset that cannot be loaded, or a model that cannot be built or cut, ends the
    process with its message and exit code 2."""
    from splitleak.data import DataError

    try:
        return build()
    except (DataError, ConfigError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
