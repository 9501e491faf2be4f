"""The run directory's record files: the JSON-lines attack log and atomic JSON files."""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = ["SIDE_CHANNEL", "JsonlWriter", "claim_run_dir", "ensure_run_dir", "read_jsonl", "write_json_atomic"]

# Files whose presence says a directory holds a splitleak run (or a sweep of runs).
RUN_MARKERS = (
    ".splitleak",
    "config.yaml",
    "attack_log.jsonl",
    "summary.json",
    "sweep.json",
    "sweep_plan.json",
    "processes.json",
)
# Where the feature party hands its eval-mode embeddings of the known samples to its adversary.
SIDE_CHANNEL = Path("side_channel") / "known_smashed.npz"


def claim_run_dir(
    run_dir: Path, *, force: bool = False, resume: bool = False, flag: str = "--run-dir", what: str = "run"
) -> Path:
    """Returns run_dir for a new run (or sweep, benchmark, results: `what`), or for one to resume; raises
    ConfigError when it cannot be used.

    A directory that already holds a run is refused unless resume (it is continued) or force (everything
    in it is removed first, so that no file of the old run lies beside the new run's). A directory that is
    not empty but holds no run is never emptied: it is refused, force or not. The claimed directory is
    marked (.splitleak) as splitleak's."""
    import shutil

    from splitleak.config import ConfigError

    run_dir = Path(run_dir)
    holds_run = run_dir.is_dir() and any((run_dir / marker).exists() for marker in RUN_MARKERS)
    if resume:
        if not holds_run:
            raise ConfigError(f"nothing to resume in {run_dir}: it holds no {what}")
        return ensure_run_dir(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{flag} {run_dir} is a file, not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not holds_run:
            raise ConfigError(
                f"{flag} {run_dir} is not empty and holds no splitleak {what}; choose an empty or new directory"
            )
        if not force:
            raise ConfigError(
                f"{run_dir} already holds a {what}: choose another {flag}, continue it with --resume, "
                "or replace it with --force"
            )
        for entry in run_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    ensure_run_dir(run_dir)
    (run_dir / ".splitleak").write_text(json.dumps({"holds": what}) + "\n")
    return run_dir


def ensure_run_dir(run_dir: Path) -> Path:
    """Returns run_dir, created if need be, after checking that files can be written in it; raises
    ConfigError (the config's run.dir is at fault) naming the directory and the cause otherwise."""
    from splitleak.config import ConfigError

    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"run.dir {run_dir} cannot be written: {err.strerror or err}") from None
    return run_dir


def _clean(value: Any) -> Any:
    """Returns value with NaN/Inf floats replaced by None, so the files stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonlWriter:
    """Appends one JSON record per line and flushes each, so a crash loses nothing already written."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if append and path.exists():
            _drop_torn_tail(path)
        self._file = open(path, "a" if append else "w", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_clean(record), separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def offset(self) -> int:
        """Returns the byte offset just after the last record written."""
        with self._lock:
            return self._file.tell()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _drop_torn_tail(path: Path) -> None:
    """Cuts a last line that a crashed writer left without its newline, so that appending starts clean."""
    with open(path, "rb+") as f:
        f.seek(0, 2)
        size = f.tell()
        if size == 0:
            return
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: Path, *, start: int = 0, torn: list | None = None) -> Iterator[dict[str, Any]]:
    """Yields the records of a JSON-lines file (from byte offset start), skipping a torn last line of a crashed
    writer; when `torn` is a list, the skipped line is appended to it."""
    with open(path, encoding="utf-8") as f:
        f.seek(start)
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if line.endswith("\n"):
                    raise
                if torn is not None:
                    torn.append(line)


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes data as indented JSON, replacing path only once the whole file is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2) + "\n")
    tmp.replace(path)
