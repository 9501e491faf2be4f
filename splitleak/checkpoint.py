"""Checkpoints of a run's processes: written atomically into the run dir at the same step boundaries by all
three, so that a run resumes from the last step they all hold.

A boundary is every run.checkpoint_every training steps and the last step of every epoch. A checkpoint is
a torch pickle of the process's own state; load only checkpoints your own runs wrote.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["CheckpointError", "Checkpoints", "is_boundary", "keep_for", "torch_bytes", "write_atomic"]


class CheckpointError(OSError):
    """A checkpoint (or final model) that cannot be written or read back; the message names the file and the cause."""


def torch_bytes(obj: Any) -> bytes:
    """Returns obj as torch.save writes it. (Serialising to memory first means a full disk shows up as the
    OSError of a plain write, not as a torch RuntimeError halfway through a zip archive.)"""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Writes data to path through a synced temporary file and a rename: path holds the old or the new
    bytes, never a part. A failed write leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


_NAME = re.compile(r"^step-(\d{4})-(\d{6})\.pt$")


def is_boundary(epoch: int, step: int, *, steps_per_epoch: int, every: int) -> bool:
    """Returns whether the state after training step (epoch, step) is checkpointed."""
    if every <= 0:
        return False
    done = epoch * steps_per_epoch + step + 1
    return done % every == 0 or step == steps_per_epoch - 1


def keep_for(config, role: str) -> int:
    """Returns how many checkpoints a process keeps: the parties enough to go back as far as the adversary
    can lag behind them (its queue), the adversary two."""
    if role == "adversary":
        return 2
    every = max(1, config.run.checkpoint_every)
    return math.ceil(config.adversary.queue_size / every) + 2


class Checkpoints:
    """One process's checkpoints in RUN_DIR/checkpoints/ROLE/step-EEEE-SSSSSS.pt."""

    def __init__(self, run_dir: Path, role: str, *, keep: int) -> None:
        self.dir = Path(run_dir) / "checkpoints" / role
        self.keep = keep

    def path(self, epoch: int, step: int) -> Path:
        return self.dir / f"step-{epoch:04d}-{step:06d}.pt"

    def steps(self) -> list[tuple[int, int]]:
        """Returns the (epoch, step) of every checkpoint held, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [m.groups() for m in (_NAME.match(p.name) for p in self.dir.iterdir()) if m]
        return sorted((int(e), int(s)) for e, s in found)

    def save(self, epoch: int, step: int, state: dict[str, Any]) -> None:
        """Writes the checkpoint of step (epoch, step) atomically, then drops the oldest beyond `keep`.

        Raises CheckpointError naming the file and the cause (a full disk, say); the previous checkpoints
        are untouched then."""
        target = self.path(epoch, step)
        try:
            write_atomic(target, torch_bytes({"epoch": epoch, "step": step, **state}))
        except OSError as err:
            raise CheckpointError(f"cannot write checkpoint {target}: {err.strerror or err}") from err
        for old in self.steps()[: -self.keep]:
            self.path(*old).unlink(missing_ok=True)

    def damage(self, epoch: int, step: int) -> str | None:
        """Returns why the checkpoint of step (epoch, step) cannot be read back (None if it can): checked
        without unpickling it, by the CRC of every member of torch's zip archive."""
        path = self.path(epoch, step)
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile) as err:
            return f"cannot read checkpoint {path}: {err}"
        return None if bad is None else f"cannot read checkpoint {path}: {bad} fails its CRC"

    def load(self, epoch: int, step: int) -> dict[str, Any]:
        """Returns the checkpoint of step (epoch, step); FileNotFoundError naming the steps held if there is none,
        CheckpointError naming the file if it cannot be read back (damaged, or cut short by a copy)."""
        import torch

        path = self.path(epoch, step)
        if not path.exists():
            held = ", ".join(f"({e}, {s})" for e, s in self.steps()) or "none"
            raise FileNotFoundError(f"no checkpoint of step ({epoch}, {step}) in {self.dir}; it holds: {held}")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # torch.load raises whatever its unpickler meets in a damaged file
            raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
