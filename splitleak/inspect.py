"""`splitleak inspect RUN_DIR`: a run's attack log as a person reads it in a terminal, or as JSON lines and
CSV for machines.

The terminal view fits 100 columns: the verdict and the defense on top, then one table with the attacks
as rows and the epochs (and the inference pass) as columns, accuracies to 3 places. `--rounds` adds one
line per round; `--follow` prints those lines while the run goes on and ends with the table.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Iterator

from rich import box
from rich.console import Console
from rich.table import Table

from splitleak.runlog import read_jsonl

__all__ = [
    "ATTACK_ROW_FIELDS",
    "attack_rows",
    "attack_rows_table",
    "epoch_matrix",
    "epoch_table",
    "follow_records",
    "overview",
    "print_records",
    "round_header",
    "round_line",
    "wide_console",
    "write_csv",
]

WIDTH = 100
# The columns of --csv, and of splitleak.load_run(...).attacks: one row per attack result.
ATTACK_ROW_FIELDS = ("record", "round", "epoch", "step", "phase", "attack", "data", "n", "accuracy", "auc", "seconds")


def wide_console() -> Console:
    """Returns a console for stdout: the terminal's width, or 100 columns when writing to a file or pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=WIDTH)


def _log_path(run_dir: Path) -> Path:
    path = run_dir / "attack_log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    return path


def _accuracy(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def attack_rows(records) -> list[dict]:
    """Returns one row per attack result of every round and epoch record (the record's place, then the
    entry's own fields without its per-sample predictions and per-class recall)."""
    rows = []
    for record in records:
        kind = record.get("type")
        if kind not in ("round", "epoch") or record.get("duplicate"):
            continue
        for entry in record.get("attacks", []):
            row = {"record": kind, "round": record.get("round"), "epoch": record.get("epoch")}
            row |= {"step": record.get("step"), "phase": record.get("phase")}
            row |= {k: v for k, v in entry.items() if k not in ("predictions", "recall", "phase")}
            rows.append(row)
    return rows


# -- the verdict ----------------------------------------------------------------------------------


def privacy_budget(defense: dict) -> tuple[str, str]:
    """Returns (epsilon, delta) as a person reads them; label DP (randomized response) is pure epsilon-DP,
    and its delta reads 0, not 0e+00."""
    delta = defense.get("delta") or 0
    return f"{defense['epsilon']:.3g}", f"{delta:.0e}" if delta else "0"


def overview(summary: dict | None, records: list[dict]) -> list[str]:
    """Returns the lines above the table: the verdict, then what it leaves out (epsilon and delta, the
    test set size, the threshold)."""
    if not summary:
        hello = next((r for r in records if r.get("type") == "hello"), {})
        rounds = sum(1 for r in records if r.get("type") == "round" and not r.get("duplicate"))
        return [f"run {hello.get('run_id', '?')}: no summary yet ({rounds} rounds logged; the run has not finished)"]
    lines = [summary["headline"]] if summary.get("headline") else []
    # The headline says the leakage, how soon, the task accuracy and the defense; this line what it
    # leaves out (so that nothing is printed twice in two formats).
    defense = summary.get("defense") or {}
    task = summary.get("task") or {}
    parts = []
    if defense.get("epsilon") is not None:
        parts.append("ε = {}, δ = {}".format(*privacy_budget(defense)))
    if task.get("test_samples"):
        parts.append(f"task measured on {task['test_samples']:,} test samples")
    threshold = (summary.get("time_to_leak") or {}).get("threshold")
    if threshold is not None:
        parts.append(f"leaked = the cumulative attacker's accuracy; threshold {threshold:g}")
    if not parts:
        return lines
    lines.append(" · ".join(parts))
    return lines


# -- the epoch table ------------------------------------------------------------------------------


def _row_key(entry: dict) -> str:
    if entry["attack"] in ("cumulative", "random"):
        label = "cumulative" if entry["attack"] == "cumulative" else "random guess"
    else:
        label = f"{entry['attack']} {entry['data']}"
    return f"{label} (infer)" if entry.get("phase") == "infer" else label


def epoch_matrix(records: list[dict]) -> tuple[list[str], list[int], bool, dict[str, dict]]:
    """Returns the epoch-end results as a matrix: row names (the cumulative attacker first, inference-phase
    attacks last), the training epochs, whether there is an inference pass, and cells[row][epoch or
    "infer"] = that attack entry."""
    epochs = [r for r in records if r.get("type") == "epoch" and not r.get("duplicate")]
    train = {r["epoch"]: r for r in epochs if r.get("phase") != "infer"}
    infer = next((r for r in epochs if r.get("phase") == "infer"), None)
    cells: dict[str, dict] = {}
    for epoch, record in sorted(train.items()):
        for entry in record.get("attacks", []):
            cells.setdefault(_row_key(entry), {})[epoch] = entry
    if infer is not None:
        for entry in infer.get("attacks", []):
            cells.setdefault(_row_key(entry), {})["infer"] = entry
    order = sorted(cells, key=lambda k: (k != "cumulative", k.endswith("(infer)"), k.startswith("random"), k))
    return order, sorted(train), infer is not None, cells


def thin(epochs: list[int], room: int) -> list[int]:
    """Returns at most `room` of the epochs, evenly spread, the first and the last always among them."""
    if len(epochs) <= room:
        return epochs
    step = (len(epochs) - 1) / max(1, room - 1)
    return sorted({epochs[round(i * step)] for i in range(room)})


def epoch_table(records: list[dict], *, width: int = WIDTH, title: str | None = None) -> Table:
    """Returns the table of epoch-end attack accuracies: one row per attack × data, one column per epoch
    and one for the inference pass. When the epochs do not fit `width`, the first and last are kept and
    the middle is thinned (the title says so)."""
    order, epochs, has_infer, cells = epoch_matrix(records)
    label_width = max([len(k) for k in order] + [6])
    # Each value column takes 8 characters: 5 for the number, 2 of padding, 1 of separator.
    room = max(1, (width - label_width - 3) // 8 - has_infer)
    shown = thin(epochs, room)
    note = f" (epochs {', '.join(map(str, shown))} of {len(epochs)})" if len(shown) < len(epochs) else ""
    table = Table(title=(title or "attack accuracy at each epoch end") + note, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("attack", no_wrap=True)
    columns: list = list(shown) + (["infer"] if has_infer else [])
    for column in columns:
        table.add_column(f"e{column}" if column != "infer" else "infer", justify="right", no_wrap=True)
    for key in order:
        values = [_accuracy(cells[key][c].get("accuracy")) if c in cells[key] else "" for c in columns]
        table.add_row(key, *values, style="bold" if key == "cumulative" else None)
    return table


# -- one line per round ---------------------------------------------------------------------------


def round_header() -> str:
    return (
        f"{'round':>6} {'phase':<5} {'epoch':>5} {'step':>5} {'loss':>7}  {'cumulative':<18} best attack on the batch"
    )


def round_line(record: dict) -> str:
    """Returns one round as one line of at most 100 characters."""
    entries = record.get("attacks", [])
    cumulative = next((e for e in entries if e["attack"] == "cumulative"), None)
    others = [e for e in entries if e["attack"] != "cumulative"]
    if cumulative is None:
        cum = ""
    elif cumulative.get("accuracy") is None:
        cum = f"unscored n={cumulative['n']}"
    else:
        cum = f"{cumulative['accuracy']:.3f} n={cumulative['n']}"
    scored = [e for e in others if e.get("accuracy") is not None]
    if scored:
        best = max(scored, key=lambda e: e["accuracy"])
        batch = f"{best['attack']} {best['data']} {best['accuracy']:.3f}"
    else:
        batch = "unscored" if others else ""
    loss = "" if record.get("loss") is None else f"{record['loss']:.4f}"
    epoch = "" if record.get("epoch") is None else record["epoch"]
    step = "" if record.get("step") is None else record["step"]
    mark = " (duplicate)" if record.get("duplicate") else ""
    line = (
        f"{record.get('round', ''):>6} {record.get('phase', ''):<5} {epoch:>5} {step:>5} {loss:>7}  {cum:<18} {batch}"
    )
    return (line + mark)[:WIDTH]


def epoch_line(record: dict) -> str:
    """Returns an epoch end as one line: the cumulative attacker and the best single attack."""
    entries = [e for e in record.get("attacks", []) if e.get("accuracy") is not None]
    what = "inference pass" if record.get("phase") == "infer" else f"epoch {record.get('epoch')}"
    cumulative = next((e for e in entries if e["attack"] == "cumulative"), None)
    parts = [f"── end of {what}:"]
    if cumulative is not None:
        parts.append(f"cumulative {cumulative['accuracy']:.3f}")
    singles = [e for e in entries if e["attack"] not in ("cumulative", "random")]
    if singles:
        best = max(singles, key=lambda e: e["accuracy"])
        parts.append(f"best single attack {best['attack']} {best['data']} {best['accuracy']:.3f}")
    if not entries:
        parts.append("unscored")
    return " ".join(parts)[:WIDTH]


# -- whole runs -----------------------------------------------------------------------------------


def _load(run_dir: Path) -> tuple[list[dict], dict | None]:
    """Returns the run's records and summary; a torn last line is skipped and said so, a missing summary
    of a finished run rebuilt from the log."""
    torn: list[str] = []
    records = list(read_jsonl(_log_path(run_dir), torn=torn))
    if torn:
        print(
            f"splitleak inspect: skipped the torn last line of {run_dir / 'attack_log.jsonl'} "
            f"({len(torn[0])} characters; its writer was killed mid-write)",
            file=sys.stderr,
        )
    summary_path = run_dir / "summary.json"
    if not summary_path.exists() and (run_dir / "config.yaml").exists():
        from adversary.summary import summarize

        summarize(run_dir)
        print(f"splitleak inspect: {summary_path} was missing; rebuilt it from the attack log", file=sys.stderr)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return records, summary


def print_run(records: list[dict], summary: dict | None, console: Console, *, rounds: bool = False) -> None:
    """Prints a run as a person reads it: the verdict, (every round,) the epoch table, any lag or error."""
    for i, line in enumerate(overview(summary, records)):
        console.print(line, style="bold" if i == 0 else None, markup=False, highlight=False)
    if rounds:
        console.print(round_header(), style="dim", markup=False, highlight=False)
        for record in records:
            if record.get("type") == "round":
                console.print(round_line(record), markup=False, highlight=False)
    console.print(epoch_table(records, width=min(console.width, WIDTH) if console.is_terminal else WIDTH))
    lags = [r for r in records if r.get("type") == "lag" and "waited_ms" in r]
    if lags:
        console.print(
            f"the adversary fell behind {'once' if len(lags) == 1 else f'{len(lags)} times'} "
            f"(longest wait {max(r['waited_ms'] for r in lags):.0f} ms); "
            "exchanges waited, none was dropped",
            markup=False,
            highlight=False,
        )
    errors = [r for r in records if r.get("type") == "error"]
    for record in errors[:5]:
        console.print(f"error ({record.get('method')}): {record.get('error')}", style="yellow", markup=False)
    if len(errors) > 5:
        console.print(f"... and {len(errors) - 5} more error records (--json shows them)", style="yellow")


def write_csv(records: list[dict], out: IO[str]) -> None:
    """Writes one CSV row per attack result (ATTACK_ROW_FIELDS)."""
    writer = csv.DictWriter(out, fieldnames=ATTACK_ROW_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(attack_rows(records))


def print_records(
    run_dir: Path,
    *,
    as_json: bool = False,
    as_csv: bool = False,
    epochs_only: bool = False,
    rounds: bool = False,
    console: Console | None = None,
) -> None:
    """Prints the run's attack log: the terminal view, JSON lines (as_json) or CSV (as_csv)."""
    records, summary = _load(Path(run_dir))
    if epochs_only:
        records = [r for r in records if r.get("type") != "round"]
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(record) + "\n")
        return
    if as_csv:
        write_csv(records, sys.stdout)
        return
    print_run(records, summary, console or wide_console(), rounds=rounds)


# -- following a run ------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_marker(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "processes.json").read_text())
    except (OSError, ValueError):
        return None


def _current_run_started(run_dir: Path) -> bool:
    """Returns whether run_dir holds a run that is going on: its processes (processes.json) are alive, or,
    for a run whose processes were started by hand, its log has no finish record yet."""
    marker = _run_marker(run_dir)
    if marker is not None:
        return any(_alive(pid) for pid in marker.get("pids", {}).values())
    log = run_dir / "attack_log.jsonl"
    return log.exists() and not any(r.get("type") == "finish" for r in read_jsonl(log))


def follow_records(run_dir: Path, *, poll_s: float = 0.5, on_wait=None) -> Iterator[dict]:
    """Yields the current run's records as they are written, until its finish record (or until its
    processes are gone without one). A run dir whose last run has ended is not replayed: this waits for
    the next run to start there (on_wait() is called once while waiting)."""
    run_dir = Path(run_dir)
    marker = _run_marker(run_dir)
    if not _current_run_started(run_dir):
        if on_wait is not None:
            on_wait()
        while True:
            time.sleep(poll_s)
            current = _run_marker(run_dir)
            newer = current is not None and (marker is None or current.get("started") != marker.get("started"))
            if newer or (current is None and _current_run_started(run_dir)):
                marker = current
                break
    path = run_dir / "attack_log.jsonl"
    while not path.exists():
        time.sleep(poll_s)
    with open(path, encoding="utf-8") as f:
        buffer = ""
        while True:
            chunk = f.readline()
            if not chunk:
                if marker is not None and not any(_alive(p) for p in marker.get("pids", {}).values()):
                    return  # the run's processes are gone and the log has nothing more
                time.sleep(poll_s)
                continue
            buffer += chunk
            if not buffer.endswith("\n"):
                continue
            record = json.loads(buffer)
            buffer = ""
            yield record
            if record.get("type") == "finish":
                return


def follow(run_dir: Path, console: Console) -> int:
    """Prints the current run as it goes: one header, one line per round, one per epoch end, and the
    verdict and epoch table at the end. Returns 0 when the run finished, 1 when it ended without Finish."""
    run_dir = Path(run_dir)

    def waiting() -> None:
        console.print(f"waiting for a run to start in {run_dir} (its last run has ended)", style="dim")

    records: list[dict] = []
    header = False
    for record in follow_records(run_dir, on_wait=waiting):
        records.append(record)
        kind = record.get("type")
        if kind == "hello":
            console.print(
                f"run {record.get('run_id')}: cut {record.get('cut_shape')}, {record.get('num_classes')} classes, "
                f"defense {record.get('defense') or 'none'}"
                + (f", resumed from step {tuple(record['resumed_from'])}" if record.get("resumed_from") else ""),
                markup=False,
                highlight=False,
            )
        elif kind == "round":
            if not header:
                console.print(round_header(), style="dim", markup=False, highlight=False)
                header = True
            console.print(round_line(record), markup=False, highlight=False)
        elif kind == "epoch":
            console.print(epoch_line(record), style="bold", markup=False, highlight=False)
    finished = any(r.get("type") == "finish" for r in records)
    if not finished:
        console.print("the run's processes ended without finishing; continue it with splitleak demo --resume")
        return 1
    # The adversary writes summary.json right after the finish record: wait (briefly) for this run's.
    run_id = next((r.get("run_id") for r in records if r.get("type") == "hello"), None)
    deadline = time.monotonic() + 10
    while True:
        _, summary = _load(run_dir)
        if (summary or {}).get("run_id") == run_id or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print_run(records, summary, console)
    return 0


def attack_rows_table(rows: list[dict], *, title: str, extra: tuple[str, ...] = ()) -> Table:
    """Returns a table of summary-style attack rows (attack, data, phase, epoch, accuracy, n, then extra keys)."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for col in ("attack", "data", "phase", "epoch", "accuracy", "n", *extra):
        table.add_column(col.replace("_", " "))
    for row in rows:
        table.add_row(
            row["attack"],
            row["data"],
            row["phase"],
            "–" if row.get("epoch") is None else str(row["epoch"]),
            _accuracy(row.get("accuracy")),
            str(row["n"]),
            *[str(row.get(key)) for key in extra],
        )
    return table
