"""What a person reads: the HTML report of a run and of a sweep, runs compared side by side, and
`inspect --follow` on a demo going on."""

import json
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import REPO, small_config
from splitleak.names import ATTACK_NAMES
from splitleak.report import attack_colour, compare_runs, write_report
from splitleak.runner import run_in_process
from splitleak.sweep import grid_points, run_sweep

# The adversary scores its predictions against the dataset's labels (the report then has accuracies).
SCORED = {"mode": "proxy", "ground_truth": "dataset"}


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def _screenshot(page, out):
    """Renders the page in headless Chromium (offline) and returns the screenshot as an RGB array."""
    import matplotlib.image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,2400",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return matplotlib.image.imread(out)[..., :3]


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
def test_a_run_report_is_one_offline_page_with_its_pictures(tmp_path, dataset):
    config = small_config(tmp_path, data={"name": dataset}, train={"epochs": 2}, adversary=SCORED)
    summary = run_in_process(config)
    page = write_report(tmp_path / "run")
    text = page.read_text()
    assert summary["headline"] in text
    images = _images(text)
    assert {"report-rounds.png", "report-epochs.png", "report-recall.png"} <= set(images)
    for name in images:
        assert (page.parent / name).stat().st_size > 10_000, name
    assert not re.search(r'(src|href)="(https?:)?//', text), "the page opens offline: nothing is fetched"
    assert ("AUC" in text) == (dataset == "breast_cancer"), "AUC beside the accuracy on binary tasks"
    accuracy = summary["leakage"]["train"]["accuracy"]
    assert f"{accuracy:.3f}" in text

    shot = _screenshot(page, tmp_path / "report.png")
    rows_with_ink = np.flatnonzero((shot < 0.9).any(axis=2).any(axis=1))
    assert rows_with_ink.size and rows_with_ink[-1] > 1200, "the pictures were drawn, not broken-image boxes"


def test_a_sweep_report_marks_a_diverged_run_and_draws_every_point(tmp_path):
    config = small_config(tmp_path, adversary=SCORED, train={"epochs": 2})
    path = tmp_path / "run.yaml"
    from splitleak.config import dump_config

    path.write_text(dump_config(config))
    points = grid_points([], defense="dp_sgd", values=[0.01, 5.0])
    run_sweep(path, ["train.lr=3"], run_dir=tmp_path / "sweep", points=points, seeds=[0], transport="inproc")
    page = write_report(tmp_path / "sweep")
    text = page.read_text()
    for name in _images(text):
        assert (page.parent / name).stat().st_size > 10_000, name
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    names = [p["name"] for p in sweep["points"]]
    assert names[0] == "no defense" and all(name in text for name in names)
    assert len(sweep["runs"]) == 3 and (tmp_path / "sweep" / "sweep_epochs.csv").exists()
    # epsilon 0.01 at lr 3 diverges in its first steps (seeded): the page names it instead of dropping it.
    diverged = [r for r in sweep["runs"] if r["failure"]]
    assert [r["point"] for r in diverged] == ["defense.name-dp_sgd__defense.epsilon-0.01"]
    assert "Diverged runs" in text and "dp_sgd epsilon=0.01: 1 of 1 seeds diverged" in text


def test_every_attack_wears_its_own_colour_in_every_plot():
    """One colour per registered attack, none of them the leak threshold's red, the best inference
    attack's purple or the task accuracy's grey."""
    from matplotlib.colors import to_rgba

    colours = [attack_colour(name) for name in ATTACK_NAMES]
    assert len(set(colours)) == len(ATTACK_NAMES)
    taken = {to_rgba(c) for c in ("tab:red", "tab:purple", "tab:gray", "grey", "black")}
    assert not taken & {to_rgba(c) for c in colours}


def test_compare_prints_the_settings_that_differ(tmp_path):
    dirs = []
    for top in (1, 2):
        config = small_config(tmp_path / f"top{top}", model={"top_layers": top, "cut_dim": 16}, adversary=SCORED)
        run_in_process(config)
        dirs.append(tmp_path / f"top{top}" / "run")
    keys, rows = compare_runs(dirs)
    assert keys == ["model.top_layers"]
    assert [r["settings"] for r in rows] == [{"model.top_layers": 1}, {"model.top_layers": 2}]
    for row, run_dir in zip(rows, dirs):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert row["leaked.train"] == summary["leakage"]["train"]["accuracy"]
        assert row["time_to_leak"] == (summary["leakage"]["time_to_leak"] or {}).get("round")
    done = subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "compare", *map(str, dirs), "--out", str(tmp_path / "c.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "model.top_layers" in done.stdout and (tmp_path / "c.png").stat().st_size > 10_000


@pytest.mark.slow
def test_follow_waits_for_the_new_run_and_prints_one_line_per_round(tmp_path):
    """Started on a run dir whose last run has ended, --follow does not replay it: it waits for the
    next demo there and prints that run as it goes."""
    run_dir = tmp_path / "run"
    config = small_config(tmp_path, adversary=SCORED, run={"id": "old-run", "dir": str(run_dir)})
    old = run_in_process(config)
    follower = subprocess.Popen(
        [sys.executable, "-m", "splitleak.cli", "inspect", str(run_dir), "--follow"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"},
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(follower.stdout))
    reader.start()
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitleak.cli",
            "demo",
            "--run-dir",
            str(run_dir),
            "--force",
            "-q",
            "run.id=new-run",
            "train.epochs=2",
            "train.batch_size=64",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    follower.wait(timeout=60)
    reader.join()
    assert follower.returncode == 0, follower.stderr.read()
    assert out[0].startswith("waiting for a run"), out[:3]
    assert not any("old-run" in line for line in out), "the ended run is not replayed"
    assert any(line.startswith("run new-run") for line in out)
    summary = json.loads((run_dir / "summary.json").read_text())
    log = [json.loads(line) for line in (run_dir / "attack_log.jsonl").read_text().splitlines()]
    rounds = sum(r["type"] == "round" for r in log)
    round_lines = [line for line in out if re.match(r"\s*\d+ (train|infer) ", line)]
    assert len(round_lines) == rounds, (len(round_lines), rounds, out[:8])
    assert old["run_id"] == "old-run" and summary["run_id"] == "new-run"
    too_wide = [line for line in out if len(line.rstrip("\n")) > 100]
    assert not too_wide, too_wide
