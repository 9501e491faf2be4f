"""The run directory's record files: the JSON-lines attack log and atomic JSON files."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = ["JsonlWriter", "read_jsonl", "write_json_atomic"]


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

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_clean(record), separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yields the records of a JSON-lines file, skipping a torn last line of a crashed writer."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if line.endswith("\n"):
                    raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes data as indented JSON, replacing path only once the whole file is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2) + "\n")
    tmp.replace(path)
