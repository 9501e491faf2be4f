"""A full disk under the run dir: the demo fails within its deadline, naming the disk and the file, and
the run resumes once there is room again."""

import os
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a size-limited tmpfs needs root"),
]


@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs under tmp_path; yields a function that sets its size."""
    mount = tmp_path / "run"
    mount.mkdir()

    def size(limit: str, *, remount: bool = False) -> None:
        options = f"remount,size={limit}" if remount else f"size={limit}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    yield mount, size
    subprocess.run(["umount", str(mount)], capture_output=True)


def _demo(run_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "demo", "--run-dir", str(run_dir), "train.epochs=3", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,  # the deadline: a wedged process would run into it
    )


# Which writer runs out of room first depends on the size: the adversary's log, the label party's
# checkpoint, the adversary's checkpoint. With a queue of one exchange the adversary keeps within a round
# or two of the parties, so the order of the writes is fixed (with the default queue of 256 it can lag a
# whole run behind, and at 1m the parties' checkpoints of later epochs would fill the disk first).
@pytest.mark.parametrize(
    "limit, writer",
    [("30k", "attack_log.jsonl"), ("150k", "checkpoints/label_party/"), ("1m", "checkpoints/adversary/")],
)
def test_a_full_disk_fails_the_run_at_once_naming_it(small_disk, limit, writer, figures):
    run_dir, size = small_disk
    size(limit)
    start = time.monotonic()
    done = _demo(run_dir, "adversary.queue_size=1")
    seconds = time.monotonic() - start
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("splitleak demo: ") and "No space left on device" in message, message
    assert f"{run_dir}/{writer}" in message, message
    if limit == "150k":
        # Room again: the run goes on from its last checkpoints and finishes.
        size("64m", remount=True)
        resumed = _demo(run_dir, "--resume", "adversary.queue_size=1")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert (run_dir / "summary.json").exists()
    figures.setdefault("full_disk", []).append(
        {
            "disk": limit,
            "seconds_to_fail": round(seconds, 1),
            "message": message.replace(str(run_dir), "RUN_DIR"),
            "resumed_after_room": limit == "150k",
        }
    )


def test_a_read_only_run_dir_exits_2_before_any_process_starts(small_disk):
    run_dir, size = small_disk
    size("1m,ro")
    done = _demo(run_dir / "run")
    assert done.returncode == 2, done.stderr
    assert f"run.dir {run_dir / 'run'} cannot be written: Read-only file system" in done.stderr
