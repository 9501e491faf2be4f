"""Offline replay of the attacks on captured tensors (`splitleak attack RUN_DIR`).

Rebuilds every round the live run saw, in the order its attack log recorded
them (each round's sample ids, looked up in the epoch captures), and feeds
them to the same AttackEngine: the per-round attacks, the cumulative attacker
(whose state depends on that order), the epoch-end and inference attacks.
Each result is compared with what the live run logged or wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adversary.engine import AttackEngine
from adversary.scoring import Scorer
from splitleak.config import apply_threads, load_config
from splitleak.data import load_dataset, read_known_samples
from splitleak.runlog import SIDE_CHANNEL, read_jsonl

__all__ = ["replay_run"]


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


class _Capture:
    """One captured epoch (or the inference pass): rows sorted by sample id."""

    def __init__(self, path: Path) -> None:
        data = _load(path)
        self.ids = data["ids"]
        self.smashed = torch.from_numpy(data["smashed"])
        self.grad = torch.from_numpy(data["grad"]) if "grad" in data else None

    def rows(self, sample_ids: list[int]) -> torch.Tensor:
        positions = np.searchsorted(self.ids, np.asarray(sample_ids, dtype=np.int64))
        return torch.as_tensor(positions)


def _compare_epoch(results, live_path: Path) -> bool | None:
    if not live_path.exists():
        return None
    live = _load(live_path)
    return all(np.array_equal(live.get(f"{r.attack}.{r.data}"), r.predictions) for r in results)


def replay_run(run_dir: Path, *, score: bool = True) -> list[dict]:
    """Returns one row per attack × data × epoch (and per-round attack × epoch) of the replay,
    with accuracy and whether it matches the live run."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    apply_threads(config)
    tensors = run_dir / "tensors"
    if not sorted(tensors.glob("train-epoch-*.npz")):
        raise FileNotFoundError(f"no captured tensors in {tensors}: run with adversary.capture=true")
    log_path = run_dir / "attack_log.jsonl"
    if not log_path.exists():
        raise FileNotFoundError(f"{log_path} does not exist: the replay follows the live run's rounds")
    # The run dir's own copy: a run made elsewhere (a Ray worker's scratch dir) names a path gone since.
    known_path = run_dir / "known_labels.csv"
    known_ids, known_labels = read_known_samples(known_path if known_path.exists() else config.adversary.known_labels)
    engine = AttackEngine(
        config.adversary.attacks,
        known_ids=known_ids,
        known_labels=known_labels,
        num_classes=load_dataset(config.data, config.run.seed).num_classes,
        device=config.adversary.device,
        seed=config.run.seed,
    )
    scorer = Scorer.from_config(config) if score and config.adversary.ground_truth else None
    rows: list[dict] = []
    # (attack, data, epoch) -> [rounds, rounds matching the live log]
    round_matches: dict[tuple[str, str, int | None], list[int]] = {}

    def add_epoch(results, epoch, live_path):
        matches = _compare_epoch(results, live_path)
        for r in results:
            row = {
                "attack": r.attack,
                "data": r.data,
                "phase": r.phase,
                "epoch": epoch,
                "n": len(r.sample_ids),
                "matches_live": matches,
            }
            if scorer is not None:
                row["accuracy"] = scorer.score(r.sample_ids, r.predictions, r.scores)["accuracy"]
            rows.append(row)

    def add_round(results, record, epoch):
        logged = {(e["attack"], e["data"]): e.get("predictions") for e in record.get("attacks", [])}
        for r in results:
            shown = r.predictions if r.batch_predictions is None else r.batch_predictions
            tally = round_matches.setdefault((r.attack, r.data, epoch), [0, 0])
            tally[0] += 1
            tally[1] += int(logged.get((r.attack, r.data)) == shown.tolist())

    epoch_capture: _Capture | None = None
    epoch: int | None = None

    def end_epoch():
        nonlocal epoch_capture, epoch
        if epoch_capture is None:
            return
        results = engine.train_epoch(epoch, epoch_capture.ids, epoch_capture.smashed, epoch_capture.grad)
        add_epoch(results, epoch, run_dir / "predictions" / f"train-epoch-{epoch:04d}.npz")
        epoch_capture, epoch = None, None

    infer_capture: _Capture | None = None
    for record in read_jsonl(log_path):
        if record.get("type") != "round" or record.get("duplicate") or "round" not in record:
            continue
        if record["phase"] == "train":
            if record["epoch"] != epoch:
                end_epoch()
                epoch = record["epoch"]
                epoch_capture = _Capture(tensors / f"train-epoch-{epoch:04d}.npz")
            at = epoch_capture.rows(record["sample_ids"])
            ids = np.asarray(record["sample_ids"], dtype=np.int64)
            add_round(engine.train_round(ids, epoch_capture.smashed[at], epoch_capture.grad[at]), record, epoch)
        else:
            end_epoch()
            if infer_capture is None:
                infer_capture = _Capture(tensors / "infer.npz")
            at = infer_capture.rows(record["sample_ids"])
            ids = np.asarray(record["sample_ids"], dtype=np.int64)
            add_round(engine.infer_round(ids, infer_capture.smashed[at]), record, None)
    end_epoch()
    if infer_capture is not None:
        side = None
        if (run_dir / SIDE_CHANNEL).exists():
            channel = _load(run_dir / SIDE_CHANNEL)
            side = channel["ids"], torch.from_numpy(channel["smashed"])
        results = engine.infer_end(infer_capture.ids, infer_capture.smashed, side_channel=side)
        add_epoch(results, None, run_dir / "predictions" / "infer.npz")
    for (attack, data, at_epoch), (total, matched) in round_matches.items():
        rows.append(
            {
                "attack": attack,
                "data": data,
                "phase": "rounds" if at_epoch is not None else "infer rounds",
                "epoch": at_epoch,
                "n": total,
                "matches_live": matched == total,
            }
        )
    return rows
