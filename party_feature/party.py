"""The feature party: raw features, the bottom model, and the loop that drives training and inference."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import torch

from splitleak import PROTOCOL_VERSION
from splitleak import ui
from splitleak.checkpoint import CheckpointError, Checkpoints, is_boundary, keep_for
from splitleak.codec import tensor_from_proto, tensor_to_proto
from splitleak.config import config_digest
from splitleak.data import Split, load_dataset, read_known_samples, split_ids
from splitleak.entry import device_name
from splitleak.errors import ProtocolError
from splitleak.models import build_optimizer, build_split, cut_shape
from splitleak.v1 import splitleak_pb2 as pb

log = logging.getLogger(__name__)

__all__ = ["FeatureParty", "ResumeError", "RunReport", "TrainingDiverged", "build_feature_party"]


class ResumeError(RuntimeError):
    """A run that cannot continue as asked: no checkpoint every process holds, or a label party further on."""


class TrainingDiverged(RuntimeError):
    """The bottom model produced non-finite smashed data (too much noise, too high a learning rate)."""


@dataclass
class RunReport:
    train_seconds: float = 0.0
    train_rounds: int = 0
    infer_seconds: float = 0.0
    infer_rounds: int = 0
    epochs: int = 0
    failure: str = ""
    losses: list[float] | None = None
    finish: pb.FinishReply | None = None


class FeatureParty:
    """Holds the features (never labels) and the bottom model; drives the run over a link."""

    def __init__(self, config, *, features: np.ndarray, split: Split, num_classes: int) -> None:
        self.config = config
        self.run_id = config.run.id
        self.num_classes = num_classes
        self.device = torch.device(config.feature_party.device)
        self._features = torch.from_numpy(features)
        self.split = split
        input_shape = tuple(features.shape[1:])
        # The whole model is built from the shared definition and seed; only the part below the cut is kept.
        bottom, _ = build_split(config.model, input_shape=input_shape, num_classes=num_classes, seed=config.run.seed)
        self.cut_shape = cut_shape(bottom, input_shape)
        self.bottom = bottom.to(self.device)
        log.info(
            "bottom model (%d parameters, cut shape %s) on %s",
            sum(p.numel() for p in self.bottom.parameters()),
            list(self.cut_shape),
            device_name(self.device),
        )
        self.optimizer = build_optimizer(self.bottom, config.train)
        self.wire_dtype = config.feature_party.wire_dtype
        self.steps_per_epoch = -(-len(split.train_ids) // config.train.batch_size)
        self.checkpoints = Checkpoints(Path(config.run.dir), "feature_party", keep=keep_for(config, "feature_party"))
        self.session = ""
        # What the run has done so far (carried across a resume by the checkpoints).
        self._losses: list[float] = []
        self._train_seconds = 0.0

    def batches(self, ids: np.ndarray, *, shuffle_seed: int | None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yields (sample_ids, X) batches: the loader never sees a label."""
        if shuffle_seed is not None:
            ids = np.random.default_rng(shuffle_seed).permutation(ids)
        size = self.config.train.batch_size
        for start in range(0, len(ids), size):
            batch = ids[start : start + size]
            yield batch, self._features[torch.as_tensor(batch)]

    def embed(self, ids: np.ndarray) -> torch.Tensor:
        """Returns the bottom model's smashed data for ids, in eval mode."""
        self.bottom.eval()
        with torch.no_grad():
            return torch.cat([self.bottom(x.to(self.device)).cpu() for _, x in self.batches(ids, shuffle_seed=None)])

    def hello(self, link, resume_from: tuple[int, int] | None = None, *, from_start: bool = False) -> pb.HelloReply:
        request = pb.HelloRequest(
            protocol_version=PROTOCOL_VERSION,
            run_id=self.run_id,
            cut_shape=list(self.cut_shape),
            num_classes=self.num_classes,
            batch_size=self.config.train.batch_size,
            config_digest=config_digest(self.config),
            steps_per_epoch=self.steps_per_epoch,
            from_start=from_start,
        )
        if resume_from is not None:
            request.resume_from.epoch, request.resume_from.step = resume_from
        reply = link.hello(request)
        self.session = reply.session
        return reply

    # -- checkpoints ---------------------------------------------------------------

    def _checkpoint(self, epoch: int, step: int) -> None:
        self.checkpoints.save(
            epoch,
            step,
            {
                "bottom": self.bottom.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "losses": list(self._losses),
                "train_seconds": self._train_seconds,
            },
        )

    def _restore(self, state: dict) -> None:
        self.bottom.load_state_dict(state["bottom"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._losses = list(state["losses"])
        self._train_seconds = state["train_seconds"]

    def resume(self, link) -> tuple[int, int]:
        """Says Hello from the newest checkpoint the other side (label party, adversary) also holds and
        restores it; returns the next (epoch, step) to train. Without any checkpoint, starts from the top."""
        refusals = []
        for epoch, step in reversed(self.checkpoints.steps()):
            try:
                state = self.checkpoints.load(epoch, step)
            except CheckpointError as err:
                log.warning("%s; resuming from an older checkpoint", err)
                refusals.append(str(err))
                continue
            try:
                self.hello(link, resume_from=(epoch, step))
            except ProtocolError as err:  # the in-process link
                refusals.append(err.message)
                continue
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                refusals.append(err.details())
                continue
            self._restore(state)
            log.info("resumed from the checkpoint of step (%d, %d)", epoch, step)
            return (epoch, step + 1) if step + 1 < self.steps_per_epoch else (epoch + 1, 0)
        log.warning(
            "no checkpoint is held by every process (%s): the run starts over from its first step",
            " | ".join(refusals) or f"none in {self.checkpoints.dir}",
        )
        self.hello(link, from_start=True)
        return 0, 0

    def train_epoch(self, link, epoch: int, on_step=None, start_step: int = 0) -> list[float]:
        """Runs one epoch over the training split (from start_step: the batches before it are done); returns the
        per-step losses, checkpointing at the run's boundaries."""
        losses = []
        self.bottom.train()
        for step, (ids, x) in enumerate(
            self.batches(self.split.train_ids, shuffle_seed=self.config.run.seed * 1000 + epoch)
        ):
            if step < start_step:
                continue
            self.optimizer.zero_grad()
            smashed = self.bottom(x.to(self.device))
            if (
                not torch.isfinite(smashed).all()
                or float(smashed.detach().abs().max()) > self.config.label_party.max_input_abs
            ):
                raise TrainingDiverged(
                    f"the bottom model diverged at epoch {epoch}, step {step}: its smashed data are not finite "
                    f"or beyond {self.config.label_party.max_input_abs:g} (lower train.lr, or the defense's noise)"
                )
            reply = link.train_step(
                pb.TrainStepRequest(
                    run_id=self.run_id,
                    epoch=epoch,
                    step=step,
                    sample_ids=ids.tolist(),
                    smashed=tensor_to_proto(smashed, self.wire_dtype),
                )
            )
            cut_grad = tensor_from_proto(reply.cut_grad, what="cut_grad").to(self.device, smashed.dtype)
            if cut_grad.shape != smashed.shape:
                raise RuntimeError(
                    f"label party returned a gradient of shape {list(cut_grad.shape)} "
                    f"for smashed data of shape {list(smashed.shape)}"
                )
            smashed.backward(cut_grad)
            self.optimizer.step()
            losses.append(reply.loss)
            self._losses.append(reply.loss)
            if is_boundary(epoch, step, steps_per_epoch=self.steps_per_epoch, every=self.config.run.checkpoint_every):
                self._checkpoint(epoch, step)
            if on_step:
                on_step()
        return losses

    def infer_pass(self, link, on_step=None) -> int:
        """Sends the test split's smashed data for inference; returns the number of rounds."""
        rounds = 0
        self.bottom.eval()
        with torch.no_grad():
            for i, (ids, x) in enumerate(self.batches(self.split.test_ids, shuffle_seed=None)):
                smashed = self.bottom(x.to(self.device))
                link.infer(
                    pb.InferRequest(
                        run_id=self.run_id,
                        request_id=f"{self.run_id}-infer-{i:06d}",
                        sample_ids=ids.tolist(),
                        smashed=tensor_to_proto(smashed, self.wire_dtype),
                    )
                )
                rounds += 1
                if on_step:
                    on_step()
        return rounds

    def run(
        self, link, *, known_samples: Path | None = None, side_channel: Path | None = None, resume: bool = False
    ) -> RunReport:
        """Trains for train.epochs, runs inference on the test split, and ends the run with Finish.

        With known_samples (the attacker's sample_id,label file; only the ids are
        read) and side_channel, the known samples are embedded after training and
        handed to the local adversary for the inference-phase attack. With resume, the
        run continues from the newest checkpoint every process holds.
        """
        cfg = self.config
        if resume:
            first_epoch, first_step = self.resume(link)
        else:
            reply = self.hello(link)
            if (reply.next_epoch, reply.next_step) != (0, 0):
                raise ResumeError(
                    f"the label party has already applied steps up to ({reply.next_epoch}, {reply.next_step}) "
                    f"of run {self.run_id}: continue it with --resume, or start a fresh label party or a new run.id"
                )
            first_epoch, first_step = 0, 0
        report = RunReport(losses=[])
        infer_steps = -(-len(self.split.test_ids) // cfg.train.batch_size)
        with ui.progress(cfg.feature_party.progress) as progress:
            start = time.perf_counter()
            report.epochs = first_epoch
            try:
                for epoch in range(first_epoch, cfg.train.epochs):
                    # One bar per epoch, counting that epoch's steps.
                    skipped = first_step if epoch == first_epoch else 0
                    task = progress.add_task(
                        f"train epoch {epoch + 1}/{cfg.train.epochs}", total=self.steps_per_epoch, completed=skipped
                    )
                    losses = self.train_epoch(
                        link,
                        epoch,
                        on_step=lambda task=task: progress.advance(task),
                        start_step=skipped,
                    )
                    report.epochs = epoch + 1
                    log.info("epoch %d: mean loss %.4f", epoch, float(np.mean(losses)) if losses else float("nan"))
            except TrainingDiverged as err:
                # A defense strong enough to break training is a result, not a crash: end the run and say so.
                log.error("%s", err)
                report.failure = str(err)
            self._train_seconds += time.perf_counter() - start
            report.losses = list(self._losses)
            report.train_seconds = self._train_seconds
            report.train_rounds = len(report.losses)
            if not report.failure:
                if known_samples is not None and side_channel is not None:
                    known_ids, _ = read_known_samples(known_samples)
                    write_side_channel(side_channel, known_ids, self.embed(known_ids))
                task = progress.add_task("inference", total=infer_steps)
                start = time.perf_counter()
                report.infer_rounds = self.infer_pass(link, on_step=lambda: progress.advance(task))
                report.infer_seconds = time.perf_counter() - start
        report.finish = link.finish(
            pb.FinishRequest(
                run_id=self.run_id,
                train_seconds=report.train_seconds,
                train_rounds=report.train_rounds,
                infer_seconds=report.infer_seconds,
                infer_rounds=report.infer_rounds,
                epochs=report.epochs,
                failure=report.failure,
                session=self.session,
            )
        )
        return report


def write_side_channel(path: Path, ids: np.ndarray, smashed: torch.Tensor) -> None:
    """Hands the attacker's known samples, embedded by the current bottom model, to the local adversary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ids=np.asarray(ids, dtype=np.int64), smashed=smashed.numpy())
    tmp.replace(path)


def build_feature_party(config) -> FeatureParty:
    """Returns the feature party for a run: it loads the features only, never the labels."""
    dataset = load_dataset(config.data, config.run.seed)
    features = dataset.features()
    split = split_ids(len(features), test_fraction=config.data.test_fraction, seed=config.run.seed)
    return FeatureParty(config, features=features, split=split, num_classes=dataset.num_classes)
