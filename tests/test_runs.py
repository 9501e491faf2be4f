"""Whole runs in one process (the same tap, engine and scorer as the proxy): scoring and replay."""

import numpy as np
import pytest

from adversary.replay import replay_run
from conftest import small_config
from splitleak.runlog import read_jsonl
from splitleak.runner import run_in_process


def _run(tmp_path, **adversary):
    config = small_config(
        tmp_path,
        train={"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
        adversary={"mode": "interceptor", "capture": True, **adversary},
    )
    return config, run_in_process(config)


def test_without_ground_truth_the_attacks_predict_and_nothing_is_scored(tmp_path):
    config, summary = _run(tmp_path, ground_truth=None)
    run_dir = tmp_path / "run"
    assert summary["adversary"]["scored"] is False
    assert summary["attacks"] and all(row["accuracy"] is None for row in summary["attacks"])
    rounds = [r for r in read_jsonl(run_dir / "attack_log.jsonl") if r["type"] == "round"]
    for record in rounds:
        for entry in record["attacks"]:
            assert "accuracy" not in entry
            assert len(entry["predictions"]) == record["samples"]
    with np.load(run_dir / "predictions" / "train-epoch-0001.npz") as f:
        assert set(f["distance.grad"].tolist()) <= set(range(10))
    assert all(v is None for k, v in summary["time_to_leak"].items() if k != "threshold")


@pytest.mark.parametrize("attacks", [{}, {"pca_above": 8, "pca_dim": 6}], ids=["narrow", "wide: PCA per epoch"])
def test_live_predictions_equal_offline_replay(tmp_path, attacks):
    config, summary = _run(tmp_path, ground_truth="dataset", attacks=attacks)
    rows = replay_run(tmp_path / "run")
    assert rows and all(row["matches_live"] is True for row in rows)
    live = {(r["attack"], r["data"], r["phase"], r["epoch"]): r["accuracy"] for r in summary["attacks"]}
    epoch_rows = [row for row in rows if row["phase"] in ("train", "infer")]
    for row in epoch_rows:
        assert row["accuracy"] == live[(row["attack"], row["data"], row["phase"], row["epoch"])]
    replayed = {(row["attack"], row["phase"]) for row in rows}
    assert {
        ("cumulative", "train"),
        ("cumulative", "rounds"),
        ("distance", "rounds"),
        ("tracking", "rounds"),
    } <= replayed
    assert {row["epoch"] for row in rows if row["attack"] == "cumulative"} == {0, 1}


def test_summary_and_log_carry_what_a_user_reads(tmp_path):
    config, summary = _run(tmp_path, ground_truth="dataset")
    for key in ("run_id", "dataset", "num_classes", "task", "timing", "attacks", "time_to_leak"):
        assert key in summary
    assert summary["task"]["epochs"] == 2 and 0 < summary["task"]["test_accuracy"] <= 1
    assert summary["timing"]["rounds"] > 0 and summary["timing"]["train_seconds"] > 0
    row = summary["attacks"][0]
    assert {"attack", "data", "phase", "epoch", "accuracy", "n"} <= row.keys()
    epochs = [r for r in read_jsonl(tmp_path / "run" / "attack_log.jsonl") if r["type"] == "epoch"]
    assert [r["phase"] for r in epochs] == ["train", "train", "infer"]
    for entry in epochs[0]["attacks"]:
        assert {"attack", "data", "phase", "n", "seconds"} <= entry.keys()
        if entry["attack"] != "random":
            assert "recall" in entry


def test_a_defense_that_breaks_training_ends_the_run_with_a_recorded_failure(tmp_path):
    config = small_config(
        tmp_path,
        train={"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 50.0, "momentum": 0.9},
        label_party={"defense": {"name": "dp_sgd", "epsilon": 0.1}},
        adversary={"mode": "interceptor", "ground_truth": "dataset"},
    )
    summary = run_in_process(config)
    assert summary["complete"]
    assert "diverged" in summary["task"]["failure"]
    assert summary["task"]["test_accuracy"] is None
    assert summary["timing"]["infer_rounds"] == 0


def test_the_verdict_is_the_cumulative_attackers_and_never_below_a_snapshot(tmp_path):
    """A deep top model weakens the gradient snapshots after epoch 0; the cumulative attacker keeps what it had."""
    config = small_config(
        tmp_path,
        model={"bottom_hidden": [32], "cut_dim": 16, "top_layers": 3},
        train={"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
        adversary={"mode": "interceptor", "capture": True, "ground_truth": "dataset"},
    )
    summary = run_in_process(config)
    verdict = summary["leakage"]
    assert verdict["scored"] and [e["epoch"] for e in verdict["per_epoch"]] == [0, 1, 2]
    singles = [r for r in summary["attacks"] if r["phase"] == "train" and r["attack"] not in ("random", "cumulative")]
    for entry in verdict["per_epoch"]:
        best = max(r["accuracy"] for r in singles if r["epoch"] <= entry["epoch"])
        assert entry["accuracy"] >= best - 0.005, entry
        assert entry["best_single"]["accuracy"] == best
    train = verdict["train"]
    assert train["attack"] == "cumulative" and train["epoch"] == 2 and train["samples"] == 1438
    assert train["accuracy"] == verdict["per_epoch"][-1]["accuracy"]
    leak = verdict["time_to_leak"]
    assert leak is not None and leak["accuracy"] >= config.adversary.leak_threshold
    # time_to_leak is the first round whose cumulative labelling of the samples seen reached the threshold.
    rounds = [r for r in read_jsonl(tmp_path / "run" / "attack_log.jsonl") if r["type"] == "round" and "round" in r]
    first = next(
        r
        for r in rounds
        for e in r["attacks"]
        if e["attack"] == "cumulative" and e["accuracy"] >= config.adversary.leak_threshold
    )
    assert (leak["round"], leak["epoch"], leak["step"]) == (first["round"], first["epoch"], first["step"])
    best_infer = max(r["accuracy"] for r in summary["attacks"] if r["phase"] == "infer" and r["attack"] != "random")
    assert verdict["inference"]["accuracy"] == best_infer
    assert summary["headline"].startswith(f"labels leaked: {100 * train['accuracy']:.1f}% of 1,438 training labels")


def test_without_ground_truth_the_verdict_holds_agreement_only(tmp_path):
    config, summary = _run(tmp_path, ground_truth=None)
    verdict = summary["leakage"]
    assert not verdict["scored"] and "no ground truth" in verdict["note"]
    assert verdict["train"]["accuracy"] is None and verdict["time_to_leak"] is None
    assert verdict["per_epoch"][1]["agreement_with_previous_epoch"] is not None
    assert 0 <= verdict["inference"]["agreement"] <= 1
    assert "accuracy unknown" in summary["headline"]


def test_every_binary_attack_reports_auc(tmp_path):
    config = small_config(
        tmp_path,
        data={"name": "breast_cancer"},
        train={"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
        adversary={"mode": "interceptor", "ground_truth": "dataset"},
    )
    summary = run_in_process(config)
    train_rows = [r for r in summary["attacks"] if r["phase"] == "train"]
    assert {r["attack"] for r in train_rows} >= {"cumulative", "norm", "direction", "distance", "kmeans_seeded"}
    for row in summary["attacks"]:
        assert row["auc"] is not None, row
    epochs = [r for r in read_jsonl(tmp_path / "run" / "attack_log.jsonl") if r["type"] == "epoch"]
    assert all("auc" in e for r in epochs for e in r["attacks"])
