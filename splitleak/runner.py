"""Running a whole split-learning run: as three OS processes on loopback
(`splitleak demo`, the real thing), or in one process (`--transport inproc`,
the same code paths without sockets, for sweeps)."""

from __future__ import annotations

import collections
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from splitleak.config import RunConfig, apply_threads, dump_config
from splitleak.data import draw_known_samples, load_dataset, split_ids, write_known_samples
from splitleak.entry import READY_WAIT_S, ready_port
from splitleak.runlog import SIDE_CHANNEL, claim_run_dir, ensure_run_dir, write_json_atomic

log = logging.getLogger(__name__)

__all__ = [
    "DemoError",
    "check_run",
    "draw_known_labels",
    "prepare_run_dir",
    "run_demo",
    "run_in_process",
    "start_servers",
    "stop_processes",
    "wait_servers",
    "write_run_config",
]


class DemoError(RuntimeError):
    """A process of the demo failed; the message says which and where its log is."""


@dataclass
class _Process:
    role: str
    popen: subprocess.Popen
    log_path: Path | None
    # The last lines the process printed (kept in memory: its log file may sit on a full disk).
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=40))
    # The thread that copies its output and fills `tail`.
    reader: threading.Thread | None = None

    def last_error(self) -> str:
        """Returns the process's last line that reads like an error, or its last line. Once the process has
        exited, waits (a little) for the copy of its output to reach the end: the line that says why it
        exited is its last."""
        if self.reader is not None and self.popen.poll() is not None:
            self.reader.join(timeout=5)
        lines = [line.strip() for line in self.tail if line.strip()]
        for line in reversed(lines):
            if any(word in line for word in ("ERROR", "Error", "error:", "cannot", "UNAVAILABLE", "FAILED")):
                return line
        return lines[-1] if lines else ""


def _tee(proc: _Process, stream, log_file, echo) -> None:
    """Copies a process's output to its log file (and, for the feature party, the terminal), keeping the tail."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        proc.tail.append(line)
        for out in (log_file, echo):
            if out is None:
                continue
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):
                pass  # a full disk must not stop the copy to the terminal, nor the tail


def draw_known_labels(config: RunConfig, path: Path) -> int:
    """Writes the attacker's known samples (adversary.known_per_class per class, drawn from the training
    split by run.seed) to path; returns how many. Drawing reads the labels: it is the experimenter's step."""
    labels = load_dataset(config.data, config.run.seed).labels()
    split = split_ids(len(labels), test_fraction=config.data.test_fraction, seed=config.run.seed)
    known = draw_known_samples(
        labels, split.train_ids, per_class=config.adversary.known_per_class, seed=config.run.seed
    )
    write_known_samples(path, known)
    return len(known)


def check_run(config: RunConfig) -> None:
    """Raises DataError or ConfigError before any process starts: unreadable or inconsistent data files, a
    model that cannot be built or cut as configured, a device this host does not have."""
    from splitleak.data import check_dataset, check_known_samples
    from splitleak.entry import DEVICE_KEYS, check_device
    from splitleak.models import build_split

    for key in DEVICE_KEYS.values():
        check_device(config, key)
    check_dataset(config.data, config.run.seed)
    if config.adversary.mode != "off" and config.adversary.known_labels is not None:
        check_known_samples(config, config.adversary.known_labels)
    dataset = load_dataset(config.data, config.run.seed)
    build_split(config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes, seed=config.run.seed)


def prepare_run_dir(config: RunConfig, *, resume: bool = False) -> RunConfig:
    """Returns the run's config with the attacker's known samples in the run dir (for the adversary only):
    adversary.known_labels copied there when set, else drawn from the training split.

    A fresh run starts from an empty checkpoint folder; a resumed one keeps its known samples and checkpoints."""
    run_dir = ensure_run_dir(Path(config.run.dir))
    if not resume:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    adv = config.adversary
    if adv.mode != "off":
        known_path = run_dir / "known_labels.csv"
        if adv.known_labels is not None and Path(adv.known_labels).resolve() != known_path.resolve():
            shutil.copyfile(adv.known_labels, known_path)  # the user's own: the run dir keeps what was used
        elif not (resume and known_path.exists()):
            draw_known_labels(config, known_path)
        config = config.model_copy(update={"adversary": adv.model_copy(update={"known_labels": known_path})})
    return config


def _start(
    role: str, module: str, config_path: Path, run_dir: Path, overrides: list[str], *, capture_log: bool
) -> _Process:
    """Starts `python -m module`; its output goes to RUN_DIR/logs/ROLE.log (capture_log) or to this
    terminal (the feature party's progress and log lines), and its last lines are kept either way."""
    ready = run_dir / "ready" / f"{role}.json"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", module, "--config", str(config_path), "--ready-file", str(ready), *overrides]
    log_path = run_dir / "logs" / f"{role}.log" if capture_log else None
    if log_path is None and sys.stderr.isatty():
        return _start_on_terminal(role, cmd)
    log_file = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a")
    popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = _Process(role, popen, log_path)
    echo = None if capture_log else sys.stderr
    proc.reader = threading.Thread(target=_tee, args=(proc, popen.stdout, log_file, echo), daemon=True)
    proc.reader.start()
    return proc


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _start_on_terminal(role: str, cmd: list[str]) -> _Process:
    """Starts the process on a pseudo-terminal of the size of ours and copies what it draws (live progress
    bars included) to our terminal, keeping its last lines, stripped of terminal codes, for error messages."""
    import fcntl
    import os
    import pty
    import termios

    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(sys.stderr.fileno(), termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass  # the child's console falls back to 80 columns
    popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    proc = _Process(role, popen, None)

    def copy() -> None:
        pending = ""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child has exited and the terminal is closed
                break
            if not chunk:
                break
            try:
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            pending += _ANSI.sub("", chunk.decode(errors="replace")).replace("\r\n", "\n")
            *lines, pending = pending.split("\n")
            proc.tail.extend(line.rsplit("\r", 1)[-1] + "\n" for line in lines)
        os.close(master)

    proc.reader = threading.Thread(target=copy, daemon=True)
    proc.reader.start()
    return proc


def _wait_ready(proc: _Process, run_dir: Path, timeout_s: float = READY_WAIT_S) -> int:
    ready = run_dir / "ready" / f"{proc.role}.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        port = ready_port(ready)
        if port is not None:
            return port
        if proc.popen.poll() is not None:
            raise DemoError(
                f"{proc.role} exited with code {proc.popen.returncode} before serving: {proc.last_error()} "
                f"(see {proc.log_path})"
            )
        time.sleep(0.05)
    raise DemoError(f"{proc.role} did not start serving within {timeout_s:.0f}s; see {proc.log_path}")


def stop_processes(procs: list[_Process], timeout_s: float) -> None:
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop; killing it", proc.role, proc.popen.pid)
            proc.popen.kill()
            proc.popen.wait()


def write_run_config(config: RunConfig) -> Path:
    """Writes the run's resolved config (loopback, OS-picked ports) to RUN_DIR/config.yaml; returns its path."""
    run_dir = Path(config.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config.model_copy(
        update={
            "label_party": config.label_party.model_copy(update={"host": "127.0.0.1", "port": 0}),
            "adversary": config.adversary.model_copy(update={"host": "127.0.0.1", "port": 0}),
        }
    )
    path = run_dir / "config.yaml"
    path.write_text(f"# Written by splitleak for run {config.run.id}\n" + dump_config(config))
    return path


def launch_servers(config: RunConfig, config_path: Path, procs: list[_Process], *, resume: bool = False) -> Path:
    """Starts the label party (and the proxy, in proxy mode) without waiting for either; returns the ready file
    of the one the feature party calls. The proxy waits for the label party's ready file by itself
    (--address-from), so the processes load their libraries at the same time."""
    run_dir = Path(config.run.dir)
    flags = ["--resume"] if resume else []
    label = _start("label_party", "party_label", config_path, run_dir, flags, capture_log=True)
    procs.append(label)
    ready = run_dir / "ready" / "label_party.json"
    if config.adversary.mode == "proxy":
        upstream = ["--address-from", str(ready), "adversary.upstream"]
        procs.append(_start("adversary", "adversary", config_path, run_dir, [*flags, *upstream], capture_log=True))
        ready = run_dir / "ready" / "adversary.json"
    return ready


def wait_serving(procs: list[_Process], run_dir: Path) -> str:
    """Returns the address of the last of procs once each serves; raises DemoError naming the first that
    exits before it does."""
    port = 0
    for proc in procs:
        port = _wait_ready(proc, run_dir)
    return f"127.0.0.1:{port}"


def start_servers(config: RunConfig, config_path: Path, procs: list[_Process], *, resume: bool = False) -> str:
    """Starts the label party (and the proxy, in proxy mode); returns the address the feature party calls."""
    launch_servers(config, config_path, procs, resume=resume)
    return wait_serving(procs, Path(config.run.dir))


def _last_record(path: Path) -> dict | None:
    """Returns the last complete record of a JSON-lines file (None if there is none yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def _doing(record: dict | None) -> str:
    if record is None:
        return "no record yet"
    kind = record.get("type")
    if kind == "round":
        where = f"epoch {record['epoch']} step {record['step']}" if record.get("phase") == "train" else "inference"
        return f"attacking round {record.get('round', '?')} ({where})"
    if kind == "epoch":
        what = "inference pass" if record.get("phase") == "infer" else f"epoch {record.get('epoch')}"
        return f"finished the {what} attacks"
    return f"last wrote a {kind} record"


def wait_servers(procs: list[_Process], run_dir: Path, *, stall_s: float = 180.0, report_s: float = 10.0) -> None:
    """Waits for the label party and adversary to exit by themselves after Finish; raises DemoError if one fails.

    The adversary may still be working through its queue of rounds when training ends: it is waited for
    as long as its attack log keeps growing (saying every report_s seconds what it is doing), and given
    up on only after stall_s seconds without a new record.
    """
    log_path = run_dir / "attack_log.jsonl"
    size, changed, reported = -1, time.monotonic(), time.monotonic()
    for proc in procs:
        while True:
            try:
                proc.popen.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            current = log_path.stat().st_size if log_path.exists() else 0
            if current != size:
                size, changed = current, now
            if now - changed > stall_s:
                raise DemoError(
                    f"{proc.role} did not exit after the run finished and its attack log has not grown for "
                    f"{stall_s:.0f}s; see {proc.log_path}"
                )
            if now - reported > report_s:
                reported = now
                print(f"waiting for the {proc.role}: {_doing(_last_record(log_path))}", file=sys.stderr, flush=True)
        if proc.popen.returncode != 0:
            raise DemoError(
                f"{proc.role} exited with code {proc.popen.returncode}: {proc.last_error()} (see {proc.log_path})"
            )


def _raise_if_a_server_failed(servers: list[_Process]) -> None:
    for proc in servers:
        if proc.popen.poll() not in (None, 0):
            raise DemoError(
                f"{proc.role} exited with code {proc.popen.returncode} during the run: {proc.last_error()} "
                f"(see {proc.log_path}; continue the run with --resume)"
            )


def _watch(feature: _Process, servers: list[_Process]) -> None:
    """Waits for the feature party to end; a server that fails before it ends the run at once, named. (A
    server that exits 0 has seen the run's Finish; the feature party ends right after it.)"""
    while feature.popen.poll() is None:
        _raise_if_a_server_failed(servers)
        time.sleep(0.2)
    if feature.popen.returncode != 0:
        # The feature party may have failed because a server did (the adversary out of disk space, say), and
        # exited first: the server that failed is the cause to name.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(p.popen.poll() is None for p in servers):
            _raise_if_a_server_failed(servers)
            time.sleep(0.1)
        _raise_if_a_server_failed(servers)
        raise DemoError(
            f"feature party exited with code {feature.popen.returncode}: {feature.last_error()} "
            "(continue the run with --resume)"
        )


def drop_checkpoints(config: RunConfig) -> None:
    """Removes the checkpoints of a run that completed (every process stopped, its summary written), unless
    run.keep_checkpoints: only --resume of an unfinished run reads them."""
    folder = Path(config.run.dir) / "checkpoints"
    if config.run.keep_checkpoints or not folder.is_dir():
        return
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    logging.getLogger("splitleak.demo").info(
        "run complete: dropped its checkpoints (%.1f MB; run.keep_checkpoints=true keeps them)", size / 1e6
    )


def run_demo(config: RunConfig, *, resume: bool = False, force: bool = False) -> dict:
    """Runs the configured run as separate processes on loopback; returns its summary.json contents.

    resume: continue the run in run.dir (after any of its processes died) from the newest checkpoint all
    three hold; the result equals the uninterrupted run's."""
    if config.adversary.mode == "off":
        raise DemoError("the demo needs the adversary: set adversary.mode to proxy or interceptor")
    check_run(config)
    claim_run_dir(Path(config.run.dir), force=force, resume=resume)
    config = prepare_run_dir(config, resume=resume)
    run_dir = Path(config.run.dir)
    config_path = write_run_config(config)
    (run_dir / "summary.json").unlink(missing_ok=True)
    procs: list[_Process] = []
    started = time.time()
    try:
        # All three start at once; each waits for the ready file of the one it calls.
        upstream = launch_servers(config, config_path, procs, resume=resume)
        servers = list(procs)
        feature = _start(
            "feature_party",
            "party_feature",
            config_path,
            run_dir,
            [
                *(["--resume"] if resume else []),
                "--supervised",
                "--address-from",
                str(upstream),
                "feature_party.label_party_address",
            ],
            capture_log=False,
        )
        procs.append(feature)
        pids = {p.role: p.popen.pid for p in procs}
        # Who runs the run, since when: `inspect --follow` tells this run from an earlier one by it.
        write_json_atomic(
            run_dir / "processes.json", {"run_id": config.run.id, "started": started, "resumed": resume, "pids": pids}
        )
        logging.getLogger("splitleak.demo").info(
            "processes: %s", ", ".join(f"{role} pid {pid}" for role, pid in pids.items())
        )
        wait_serving(servers, run_dir)
        _watch(feature, servers)
        wait_servers(servers, run_dir)
    finally:
        stop_processes(procs, timeout_s=15)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise DemoError(f"no summary was written to {summary_path}")
    summary = json.loads(summary_path.read_text())
    summary["processes"] = pids
    write_json_atomic(summary_path, summary)
    drop_checkpoints(config)
    return summary


def run_in_process(config: RunConfig, *, force: bool = False) -> dict:
    """Runs the configured run in this process (label party, tap and feature party, no sockets); returns its summary."""
    from adversary.tap import build_tap
    from party_feature.link import InProcLink
    from party_feature.party import build_feature_party
    from party_label.server import build_label_party
    from party_label.service import LabelService

    apply_threads(config)
    check_run(config)
    claim_run_dir(Path(config.run.dir), force=force)
    config = prepare_run_dir(config)
    write_run_config(config)
    run_dir = Path(config.run.dir)
    (run_dir / "summary.json").unlink(missing_ok=True)
    tap = build_tap(config) if config.adversary.mode != "off" else None
    link = InProcLink(LabelService(build_label_party(config)), tap=tap)
    feature = build_feature_party(config)
    known = config.adversary.known_labels if tap is not None and config.feature_party.embed_known else None
    try:
        report = feature.run(link, known_samples=known, side_channel=run_dir / SIDE_CHANNEL)
    finally:
        if tap is not None:
            tap.close()
    drop_checkpoints(config)
    if tap is None:
        return {
            "task": {"test_accuracy": report.finish.test_accuracy, "epochs": config.train.epochs},
            "timing": {"train_seconds": report.train_seconds, "rounds": report.train_rounds},
        }
    return json.loads((run_dir / "summary.json").read_text())
