"""Sweeps: grids over any config key, seeds, statistics, three backends with the same numbers, resuming."""

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from conftest import REPO, small_config
from splitleak.config import ConfigError, dump_config
from splitleak.sweep import Point, grid_points, point_statistics, run_sweep


def test_grid_points_are_the_product_of_the_grid():
    points = grid_points([("model.top_layers", [1, 2]), ("train.lr", [0.01, 0.1])])
    assert [p.settings for p in points] == [
        {"model.top_layers": 1, "train.lr": 0.01},
        {"model.top_layers": 1, "train.lr": 0.1},
        {"model.top_layers": 2, "train.lr": 0.01},
        {"model.top_layers": 2, "train.lr": 0.1},
    ]
    assert points[1].label == "model.top_layers-1__train.lr-0.1"
    defended = grid_points([], defense="label_dp", values=[0.5, 1])
    assert [p.settings for p in defended] == [
        {"label_party.defense.name": "none"},
        {"label_party.defense.name": "label_dp", "label_party.defense.epsilon": 0.5},
        {"label_party.defense.name": "label_dp", "label_party.defense.epsilon": 1},
    ]
    with pytest.raises(ConfigError, match="--defense must be one of"):
        grid_points([], defense="nope", values=[1])


def test_statistics_match_an_independent_computation():
    rows = [
        {
            "point": "a",
            "settings": {},
            "seed": s,
            "defense": "none",
            "strength": None,
            "failure": None,
            "test_accuracy": v,
            "cumulative.per_epoch": [v, 1.0],
        }
        for s, v in enumerate([0.91, 0.95, 0.93, 0.97, 0.92])
    ]
    figure = point_statistics(rows)[0]["figures"]["test_accuracy"]
    values = np.array([0.91, 0.95, 0.93, 0.97, 0.92])
    half = stats.t.ppf(0.975, df=4) * values.std(ddof=1) / math.sqrt(5)
    assert figure["mean"] == pytest.approx(values.mean())
    assert figure["std"] == pytest.approx(values.std(ddof=1))
    assert figure["ci95"] == pytest.approx([values.mean() - half, values.mean() + half])
    assert point_statistics(rows)[0]["figures"]["cumulative.epoch1"]["ci95"] == [1.0, 1.0]


FIGURES = ("test_accuracy", "leakage.train", "leakage.inference", "time_to_leak.round", "cumulative.per_epoch")


def _figures(rows):
    return {
        (r["point"], r["seed"]): {k: r[k] for k in FIGURES} | {k: v for k, v in r.items() if k.count(".") == 2}
        for r in rows
    }


@pytest.mark.slow
def test_local_jobs_and_ray_give_identical_runs(tmp_path):
    config = small_config(
        tmp_path, train={"epochs": 1, "batch_size": 64}, adversary={"mode": "proxy", "ground_truth": "dataset"}
    )
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(config))
    points = grid_points([("model.top_layers", [1, 2])])
    common = dict(points=points, seeds=[0, 1], transport="inproc")
    local = run_sweep(path, [], run_dir=tmp_path / "local", **common)
    jobs = run_sweep(path, [], run_dir=tmp_path / "jobs", jobs=2, **common)
    ray = run_sweep(path, [], run_dir=tmp_path / "ray", backend="ray", **common)
    assert _figures(local) == _figures(jobs) == _figures(ray)
    assert len(local) == 4 and len({r["test_accuracy"] for r in local}) > 1
    # Ray's runs came back through its object store: the whole run dir, replayable.
    assert (tmp_path / "ray" / points[0].label / "seed-0" / "attack_log.jsonl").exists()
    sweep = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert len(sweep["runs"]) == 4 and [p["point"] for p in sweep["points"]] == [p.label for p in points]
    assert sweep["points"][0]["figures"]["test_accuracy"]["n"] == 2


@pytest.mark.slow
def test_an_interrupted_sweep_completes_without_repeating_finished_runs(tmp_path):
    command = [
        sys.executable,
        "-m",
        "splitleak.cli",
        "sweep",
        "--transport",
        "inproc",
        "--grid",
        "model.top_layers=1,2",
        "--seeds",
        "0,1",
        "--run-dir",
        str(tmp_path / "sweep"),
        "train.epochs=1",
    ]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "sweep").glob("*/seed-*/sweep_point.json")):
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first.kill()
    first.wait()
    finished = {
        p.parent: p.parent.joinpath("summary.json").stat().st_mtime_ns
        for p in (tmp_path / "sweep").glob("*/seed-*/sweep_point.json")
    }
    assert 1 <= len(finished) < 4
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--resume" in refused.stderr, "a run dir holding a sweep is not reused silently"
    again = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(finished)} of 4 runs already complete" in again.stderr
    for run_dir, mtime in finished.items():
        assert run_dir.joinpath("summary.json").stat().st_mtime_ns == mtime, f"{run_dir} ran again"
    assert len(json.loads((tmp_path / "sweep" / "sweep.json").read_text())["runs"]) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "model.top_layers"], "--grid takes key=v1,v2"),
        (["--grid", "model.top_layers=1,,2"], "empty value"),
        (["--defense", "label_dp", "--values", "abc"], "label_party.defense.epsilon"),
        (["--defense", "nope", "--values", "1"], "--defense must be one of"),
        (["--grid", "train.epochs=0"], "train.epochs"),
    ],
)
def test_bad_sweeps_are_refused_before_any_run(tmp_path, args, message):
    done = subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "sweep", "--run-dir", str(tmp_path / "s"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("s/*/seed-*")), "no run started"


def test_a_point_is_named_for_a_directory():
    point = Point({"model.cut": "layer1", "label_party.defense.epsilon": 0.5, "data.path": "/a b"})
    assert point.label == "model.cut-layer1__defense.epsilon-0.5__data.path-_a_b"
