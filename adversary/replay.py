"""Offline replay of the attacks on captured tensors (`splitleak attack RUN_DIR`).

Feeds the epoch captures to the same AttackEngine the live run used, in the
same order, and compares with the predictions the live run wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adversary.engine import AttackEngine
from adversary.scoring import Scorer
from adversary.tap import SIDE_CHANNEL
from splitleak.config import load_config
from splitleak.data import load_dataset, read_known_samples

__all__ = ["replay_run"]


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _compare(results, live_path: Path) -> bool | None:
    if not live_path.exists():
        return None
    live = _load(live_path)
    return all(np.array_equal(live.get(f"{r.attack}.{r.data}"), r.predictions) for r in results)


def replay_run(run_dir: Path, *, score: bool = True) -> list[dict]:
    """Returns one row per attack × data × epoch of the replay, with accuracy and whether it matches the live run."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    tensors = run_dir / "tensors"
    epochs = sorted(tensors.glob("train-epoch-*.npz"))
    if not epochs:
        raise FileNotFoundError(f"no captured tensors in {tensors}: run with adversary.capture=true")
    known_ids, known_labels = read_known_samples(config.adversary.known_labels)
    engine = AttackEngine(
        config.adversary.attacks,
        known_ids=known_ids,
        known_labels=known_labels,
        num_classes=load_dataset(config.data, config.run.seed).num_classes,
        device=config.adversary.device,
        seed=config.run.seed,
    )
    scorer = Scorer.from_config(config) if score and config.adversary.ground_truth else None
    rows = []

    def add(results, epoch, live_path):
        matches = _compare(results, live_path)
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

    for path in epochs:
        data = _load(path)
        epoch = int(path.stem.rsplit("-", 1)[1])
        results = engine.train_epoch(
            epoch, data["ids"], torch.from_numpy(data["smashed"]), torch.from_numpy(data["grad"])
        )
        add(results, epoch, run_dir / "predictions" / path.name)
    if (tensors / "infer.npz").exists():
        data = _load(tensors / "infer.npz")
        side = None
        if (run_dir / SIDE_CHANNEL).exists():
            channel = _load(run_dir / SIDE_CHANNEL)
            side = channel["ids"], torch.from_numpy(channel["smashed"])
        results = engine.infer_end(data["ids"], torch.from_numpy(data["smashed"]), side_channel=side)
        add(results, None, run_dir / "predictions" / "infer.npz")
    return rows
