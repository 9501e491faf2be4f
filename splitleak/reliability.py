"""`make reliability`: runs the crash-safety tests and writes their figures into docs/reliability.md.

The tests are the measurements: each records what it measured (conftest's `figures` fixture) once its
assertions have passed, and this module renders those records between the doc's generated markers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from splitleak.bench import update_doc

__all__ = ["main", "render"]

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "reliability.md"
TESTS = [
    "tests/test_resume.py",
    "tests/test_resume_label_dp.py",
    "tests/test_full_disk.py",
    "tests/test_fuzz.py",
    "tests/test_label_party_grpc.py::test_finish_is_no_label_oracle",
    "tests/test_label_party_grpc.py::test_a_step_that_would_poison_the_top_model_is_refused_and_changes_nothing",
]
COMMAND = "make reliability"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render(figures: dict, *, seconds: float, versions: str) -> str:
    """Returns the generated part of docs/reliability.md from the tests' figures."""
    parts = [
        f"Written by `{COMMAND}` ({len(TESTS)} test targets, {seconds:.0f} s) on {versions}. "
        "Do not edit by hand: rerun the command."
    ]
    if figures.get("resume"):
        parts.append(
            "**Kill and resume** (`tests/test_resume.py`): digits, 2 epochs, checkpoints every 10 steps, "
            "DP-SGD (ε = 8) on the label party. At each point in turn one process is SIGKILLed (then the other "
            "two), the run resumed with `splitleak demo --run-dir D --resume` after each kill; the finished run "
            "is compared with an uninterrupted run of the same seed. The three runs kill the three processes in "
            "turn from a different first one, so that every process is killed at every point (`make test` runs "
            "the first of them).\n\n"
            + _table(
                [
                    "killed at each point",
                    "kills",
                    "rounds (each once)",
                    "duplicates marked",
                    "weights equal",
                    "attack figures equal",
                    "seconds",
                ],
                [
                    [
                        ", ".join(f"{point}: {role}" for point, role in r["killed"].items()),
                        r["kills"],
                        r["rounds"],
                        r["duplicates_marked"],
                        r["weights_equal"],
                        r["attack_figures_equal"],
                        r["seconds"],
                    ]
                    for r in figures["resume"]
                ],
            )
        )
    if figures.get("full_disk"):
        parts.append(
            "**Full disk** (`tests/test_full_disk.py`): the run dir is a tmpfs of the given size, and the "
            "adversary's queue holds one exchange (`adversary.queue_size=1`: it keeps within a round or two of "
            "the parties, so the order of the writes is fixed); which writer runs out of room first depends on "
            "the size.\n\n"
            + _table(
                ["tmpfs", "failed after (s)", "last line of `splitleak demo`", "resumed once there was room"],
                [
                    [r["disk"], r["seconds_to_fail"], f"`{r['message']}`", r["resumed_after_room"]]
                    for r in figures["full_disk"]
                ],
            )
        )
    if figures.get("fuzz"):
        parts.append(
            "**Fuzzing** (`tests/test_fuzz.py`, hypothesis, derandomized): malformed Hello, TrainStep, Infer and "
            "Finish messages (absurd shapes and dtypes, sizes that do not add up, NaN, Inf and 3e38, unknown and "
            "duplicate ids, long request ids, bytes that are no protobuf) at a label-party process mid-run, "
            "directly and through an adversary-proxy process. The messages are the same on every run of one "
            "commit; across commits they change, because Hypothesis draws some strings and numbers from the "
            "literals of the project's own source (here, dtype names such as 'proxy' or 'random'), so the "
            "statuses shift when the code does.\n\n"
            + _table(
                ["target", "messages", "statuses", "RSS growth (MB)", "valid requests afterwards"],
                [
                    [
                        r["target"],
                        r["messages"],
                        ", ".join(f"{k} {v}" for k, v in r["statuses"].items()),
                        r["rss_growth_mb"],
                        r["valid_requests_after"],
                    ]
                    for r in figures["fuzz"]
                ],
            )
        )
    if figures.get("poison"):
        parts.append(
            "**A poisoning step** (3e38 in every entry of a TrainStep):\n\n"
            + _table(
                ["label_party.max_input_abs", "status", "message", "top model unchanged"],
                [
                    [f"{r['max_input_abs']:g}", r["status"], r["details"], r["top_model_unchanged"]]
                    for r in figures["poison"]
                ],
            )
        )
    oracle = figures.get("finish_oracle")
    if oracle:
        parts.append(
            f"**Finish is no label oracle**: after {oracle['probes']} re-sent Infers of one test sample under new "
            f"request ids, Finish from other clients ({oracle['finish_from_other_clients']}) and a second Finish "
            f"({oracle['second_finish']}), the published accuracy is {oracle['published_accuracy']:.4f} on "
            f"{oracle['test_samples']} samples; the same run without them publishes "
            f"{oracle['accuracy_without_probes']:.4f}."
        )
    return "\n\n".join(parts)


def _versions() -> str:
    import platform

    import grpc
    import hypothesis
    import torch

    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"grpcio {grpc.__version__}, hypothesis {hypothesis.__version__}"
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
            cwd=REPO,
            env={**os.environ, "SPLITLEAK_FIGURES": str(out), "SPLITLEAK_FULL_RELIABILITY": "1"},
        )
        if done.returncode != 0:
            print("reliability: a test failed; docs/reliability.md is left as it was", file=sys.stderr)
            return done.returncode
        figures = json.loads(out.read_text())
    update_doc("reliability", render(figures, seconds=time.monotonic() - start, versions=_versions()), doc=DOC)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
