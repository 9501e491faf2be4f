"""The label party's domain logic: it knows nothing of gRPC.

Labels live here and nowhere else; what leaves is the cut-layer gradient (after
the defense), the loss, and aggregate metrics.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from party_label.defenses import DefenseContext, build_defense
from splitleak import PROTOCOL_VERSION
from splitleak.checkpoint import CheckpointError, Checkpoints, is_boundary, keep_for
from splitleak.data import Split
from splitleak.entry import device_name
from splitleak.errors import ProtocolError
from splitleak.models import build_optimizer, build_split, cut_shape

log = logging.getLogger(__name__)

__all__ = ["LabelParty", "StepResult"]


@dataclass(frozen=True)
class StepResult:
    cut_grad: torch.Tensor
    loss: float
    replayed: bool = False


@dataclass(frozen=True)
class _Recorded:
    # Digest of the whole request (sample ids and smashed bytes): a replay must be the same request.
    digest: str
    result: StepResult


# Request ids longer than this are refused (they are kept for replay).
MAX_REQUEST_ID = 128


def _request_digest(sample_ids: np.ndarray, smashed: torch.Tensor) -> str:
    digest = hashlib.sha256(sample_ids.astype(np.int64).tobytes())
    digest.update(smashed.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class LabelParty:
    """Trains the top model on smashed data, one (epoch, step) at a time, exactly once each."""

    def __init__(
        self,
        config,
        *,
        labels: np.ndarray,
        split: Split,
        num_classes: int,
        input_shape: tuple[int, ...],
        digest: str,
    ) -> None:
        self.config = config
        self.run_id = config.run.id
        self.num_classes = num_classes
        self.digest = digest
        self.device = torch.device(config.label_party.device)
        self.split = split
        self._labels = torch.as_tensor(labels, dtype=torch.long)
        self._is_train = np.zeros(len(labels), dtype=bool)
        self._is_train[split.train_ids] = True
        self._is_test = np.zeros(len(labels), dtype=bool)
        self._is_test[split.test_ids] = True
        self._input_shape = input_shape
        self._lock = threading.Lock()
        self._session: str | None = None
        self.steps_per_epoch = -(-len(split.train_ids) // config.train.batch_size)
        self.checkpoints = Checkpoints(Path(config.run.dir), "label_party", keep=keep_for(config, "label_party"))
        self.finished = threading.Event()
        # Set (with failure) when the party cannot go on: its checkpoints cannot be written.
        self.failed = threading.Event()
        self.failure: str | None = None
        # When the last call came (a server started for a run exits once its peer is long gone).
        self.last_call = time.monotonic()
        self._build()

    def _build(self) -> None:
        """Builds the party's initial training state from the config and seed (again, for a run that starts over)."""
        config, split, num_classes, input_shape = self.config, self.split, self.num_classes, self._input_shape
        self.defense = build_defense(
            config.label_party.defense,
            DefenseContext(
                num_classes=num_classes,
                train_size=len(split.train_ids),
                batch_size=config.train.batch_size,
                epochs=config.train.epochs,
                seed=config.run.seed,
                device=str(self.device),
            ),
        )
        self._train_labels = self.defense.train_labels(self._labels, torch.as_tensor(split.train_ids))
        # The whole model is built from the shared definition and seed; only the part above the cut is kept.
        bottom, top = build_split(config.model, input_shape=input_shape, num_classes=num_classes, seed=config.run.seed)
        self.cut_shape = cut_shape(bottom, input_shape)
        del bottom
        top = top.to(self.device)
        self.top, self.optimizer = self.defense.wrap_training(top, build_optimizer(top, config.train))
        log.info(
            "top model (%d parameters, cut shape %s, defense %s) on %s",
            sum(p.numel() for p in top.parameters()),
            list(self.cut_shape),
            self.defense.name,
            device_name(self.device),
        )

        self._last_step: tuple[int, int] | None = None
        self._recorded: OrderedDict[tuple[int, int], _Recorded] = OrderedDict()
        self._infer_replies: OrderedDict[str, tuple[str, list[int]]] = OrderedDict()
        self._test_correct: dict[int, bool] = {}
        self._last_loss = float("nan")
        self._steps_applied = 0

    @property
    def steps_applied(self) -> int:
        """Returns how many training steps have been applied (replays not counted)."""
        return self._steps_applied

    # -- handshake -----------------------------------------------------------------

    def hello(
        self,
        *,
        protocol_version: int,
        run_id: str,
        cut_shape: tuple[int, ...],
        num_classes: int,
        batch_size: int,
        config_digest: str,
        steps_per_epoch: int,
        resume_from: tuple[int, int] | None = None,
        from_start: bool = False,
    ) -> tuple[int, int, str]:
        """Returns (the next epoch, the next step this party will apply, the session secret); refuses a
        mismatched peer. With resume_from, the state of that checkpointed step is restored first; with
        from_start, the initial state.

        Each Hello issues a new session secret (the peer that greeted last owns the run's Finish)."""
        mine = self.config
        checks = [
            (
                protocol_version == PROTOCOL_VERSION,
                f"protocol version {protocol_version} is not supported; this label party speaks {PROTOCOL_VERSION}",
            ),
            (run_id == self.run_id, f"run id {run_id!r} does not match this label party's run {self.run_id!r}"),
            (
                tuple(cut_shape) == self.cut_shape,
                f"cut shape {list(cut_shape)} does not match the run's {list(self.cut_shape)}",
            ),
            (num_classes == self.num_classes, f"{num_classes} classes does not match the run's {self.num_classes}"),
            (
                batch_size == mine.train.batch_size,
                f"batch size {batch_size} does not match the run's {mine.train.batch_size}",
            ),
            (
                steps_per_epoch == self.steps_per_epoch,
                f"{steps_per_epoch} steps per epoch does not match the label party's {self.steps_per_epoch}",
            ),
            (
                config_digest == self.digest,
                f"config digest {config_digest} does not match the label party's {self.digest}: "
                "the data, model and train sections and run.seed must be identical on both parties",
            ),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ProtocolError("FAILED_PRECONDITION", "; ".join(problems))
        with self._lock:
            self.last_call = time.monotonic()
            if self.finished.is_set():
                raise ProtocolError("FAILED_PRECONDITION", f"run {self.run_id} has finished")
            if resume_from is not None:
                self._restore(*resume_from)
            elif from_start and self._last_step is not None:
                self._build()
                log.info("the run starts over from its first step")
            self._session = secrets.token_hex(16)
            epoch, step = self._next_step()
            return epoch, step, self._session

    def _next_step(self) -> tuple[int, int]:
        return (0, 0) if self._last_step is None else (self._last_step[0], self._last_step[1] + 1)

    def _check_run(self, run_id: str) -> None:
        self.last_call = time.monotonic()
        if run_id != self.run_id:
            raise ProtocolError(
                "FAILED_PRECONDITION", f"run id {run_id!r} does not match this label party's run {self.run_id!r}"
            )
        if self._session is None:
            raise ProtocolError("FAILED_PRECONDITION", "call Hello before training or inference")
        if self.finished.is_set():
            raise ProtocolError("FAILED_PRECONDITION", f"run {self.run_id} has finished")

    # -- checkpoints ---------------------------------------------------------------

    def _checkpoint(self, epoch: int, step: int) -> None:
        self.checkpoints.save(
            epoch,
            step,
            {
                "top": self.top.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "defense": self.defense.state_dict(),
                "steps_applied": self._steps_applied,
                "last_loss": self._last_loss,
                "recorded": dict(self._recorded),
            },
        )

    def _restore(self, epoch: int, step: int) -> None:
        """Puts the party back in the state it had just after step (epoch, step)."""
        try:
            state = self.checkpoints.load(epoch, step)
        except FileNotFoundError as err:
            raise ProtocolError("FAILED_PRECONDITION", f"label party cannot resume: {err}") from None
        except CheckpointError as err:
            # Refused like a step it does not hold: the feature party offers an older one.
            log.warning("%s; refusing to resume from it", err)
            raise ProtocolError("FAILED_PRECONDITION", f"label party cannot resume: {err}") from None
        self.top.load_state_dict(state["top"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.defense.load_state_dict(state["defense"])
        self._steps_applied = state["steps_applied"]
        self._last_loss = state["last_loss"]
        self._recorded = OrderedDict(state["recorded"])
        self._last_step = (epoch, step)
        self._infer_replies.clear()
        self._test_correct.clear()
        log.info("restored the checkpoint of step (%d, %d)", epoch, step)

    def _check_batch(
        self, sample_ids: np.ndarray, smashed: torch.Tensor, *, allowed: np.ndarray, split_name: str
    ) -> None:
        expected = ["batch", *self.cut_shape]
        if len(sample_ids) == 0:
            raise ProtocolError("INVALID_ARGUMENT", "the batch has no sample ids")
        if smashed.dim() != len(expected):
            raise ProtocolError(
                "INVALID_ARGUMENT",
                f"smashed tensor must be {len(expected)}-D {expected}, got shape {list(smashed.shape)}",
            )
        if tuple(smashed.shape[1:]) != self.cut_shape:
            raise ProtocolError(
                "INVALID_ARGUMENT",
                f"smashed tensor has samples of shape {list(smashed.shape[1:])}, the run's cut shape is "
                f"{list(self.cut_shape)}",
            )
        if smashed.shape[0] != len(sample_ids):
            raise ProtocolError(
                "INVALID_ARGUMENT", f"smashed tensor has {smashed.shape[0]} rows for {len(sample_ids)} sample ids"
            )
        limit = self.config.label_party.max_input_abs
        if smashed.numel() and float(smashed.abs().max()) > limit:
            raise ProtocolError(
                "INVALID_ARGUMENT", f"smashed values exceed {limit:g} in magnitude (label_party.max_input_abs)"
            )
        out_of_range = sample_ids[(sample_ids < 0) | (sample_ids >= len(allowed))]
        if len(out_of_range):
            raise ProtocolError(
                "INVALID_ARGUMENT",
                f"sample ids {out_of_range[:5].tolist()} are outside the dataset (0..{len(allowed) - 1})",
            )
        outside = sample_ids[~allowed[sample_ids]]
        if len(outside):
            raise ProtocolError(
                "INVALID_ARGUMENT", f"sample ids {outside[:5].tolist()} are not in the {split_name} split"
            )

    # -- training ------------------------------------------------------------------

    def train_step(
        self, *, run_id: str, epoch: int, step: int, sample_ids: np.ndarray, smashed: torch.Tensor
    ) -> StepResult:
        """Returns the cut-layer gradient and loss of one batch; a replayed (epoch, step) gets the recorded one."""
        self._check_run(run_id)
        key = (epoch, step)
        with self._lock:
            recorded = self._recorded.get(key)
            if recorded is not None:
                if recorded.digest != _request_digest(sample_ids, smashed):
                    raise ProtocolError(
                        "FAILED_PRECONDITION", f"step {key} was already applied with other sample ids or smashed data"
                    )
                log.info("replaying recorded reply of step %s", key)
                r = recorded.result
                return StepResult(r.cut_grad, r.loss, replayed=True)
            nxt = self._next_step()
            if self._last_step is not None and key <= self._last_step:
                raise ProtocolError(
                    "FAILED_PRECONDITION", f"step {key} was applied long ago and its reply is no longer held"
                )
            if key not in (nxt, (nxt[0] + 1, 0)):
                raise ProtocolError(
                    "FAILED_PRECONDITION", f"step {key} is ahead of the next expected step {nxt} (or {(nxt[0] + 1, 0)})"
                )
            self._check_batch(sample_ids, smashed, allowed=self._is_train, split_name="training")
            result = self._apply(sample_ids, smashed, epoch)
            self._steps_applied += 1
            self._last_step = key
            self._recorded[key] = _Recorded(_request_digest(sample_ids, smashed), result)
            while len(self._recorded) > self.config.label_party.replay_window:
                self._recorded.popitem(last=False)
            if is_boundary(epoch, step, steps_per_epoch=self.steps_per_epoch, every=self.config.run.checkpoint_every):
                try:
                    self._checkpoint(epoch, step)
                except CheckpointError as err:
                    # Without its checkpoints the run is no longer crash-safe: stop it, named, rather than
                    # train on. (A resume continues from the last checkpoint written.)
                    self.failure = f"label party {err}"
                    log.error("%s; the run cannot go on", self.failure)
                    self.failed.set()
                    raise ProtocolError("RESOURCE_EXHAUSTED", self.failure) from None
            return result

    def _apply(self, sample_ids: np.ndarray, smashed: torch.Tensor, epoch: int) -> StepResult:
        ids = torch.as_tensor(sample_ids)
        labels, active = self.defense.targets(self._train_labels, ids, epoch)
        labels = labels.to(self.device)
        smashed = smashed.to(self.device).requires_grad_(True)
        wanted = self.defense.wants_prior(ids, epoch)
        if wanted is not None:
            # Label DP's learnt prior: the current top model's prediction for samples not yet trained on.
            self.top.eval()
            with torch.no_grad():
                probabilities = F.softmax(self.top(smashed[wanted.to(self.device)]), dim=1)
            self.defense.record_prior(ids[wanted], probabilities.cpu())
        self.top.train()
        self.optimizer.zero_grad()
        if active is not None and not bool(active.any()):
            # No sample of this batch trains yet (label DP's later stages): nothing to learn, nothing back.
            self._last_loss = 0.0
            return StepResult(torch.zeros_like(smashed, device="cpu"), 0.0)
        loss = self._loss(smashed, labels, active)
        if not torch.isfinite(loss):
            self.optimizer.zero_grad()
            raise ProtocolError("INVALID_ARGUMENT", "the step's loss is not finite; the step was refused")
        loss.backward()
        grads = [p.grad for p in self.top.parameters() if p.grad is not None] + [smashed.grad]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            self.optimizer.zero_grad()
            raise ProtocolError("INVALID_ARGUMENT", "the step's gradients are not finite; the step was refused")
        # Defenses work on host memory (the returned gradient goes to the wire from there anyway), one row
        # per sample whatever the cut's shape.
        grad = smashed.grad.detach().cpu()
        cut_grad = self.defense.protect(grad.reshape(len(grad), -1), labels.cpu()).reshape(grad.shape)
        self.optimizer.step()
        self._last_loss = float(loss.detach())
        return StepResult(cut_grad, self._last_loss)

    def _loss(self, smashed: torch.Tensor, labels: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
        """Returns the step's loss: cross-entropy over the rows that train, on mixed rows under mixup.

        Under mixup, row i is mixed with row j = pairing[i]: lambda * h_i + (1 - lambda) * h_j against
        lambda * onehot(y_i) + (1 - lambda) * onehot(y_j). The gradient that goes back for sample i then
        sums what it contributed to both mixed rows it is part of."""
        if active is not None:
            rows = active.to(self.device)
            smashed, labels = smashed[rows], labels[rows]
        mix = self.defense.mixup(len(labels))
        if mix is None:
            return F.cross_entropy(self.top(smashed), labels)
        lam, pairing = mix
        pairing = torch.as_tensor(pairing, device=self.device)
        targets = F.one_hot(labels, self.num_classes).to(smashed.dtype)
        mixed = lam * smashed + (1 - lam) * smashed[pairing]
        return F.cross_entropy(self.top(mixed), lam * targets + (1 - lam) * targets[pairing])

    # -- inference -----------------------------------------------------------------

    def infer(self, *, run_id: str, request_id: str, sample_ids: np.ndarray, smashed: torch.Tensor) -> list[int]:
        """Returns the predicted classes of one inference batch (a replayed request_id returns the recorded ones)."""
        self._check_run(run_id)
        if not request_id:
            raise ProtocolError("INVALID_ARGUMENT", "request_id must be set")
        if len(request_id) > MAX_REQUEST_ID:
            raise ProtocolError("INVALID_ARGUMENT", f"request_id is longer than {MAX_REQUEST_ID} characters")
        with self._lock:
            digest = _request_digest(sample_ids, smashed)
            if request_id in self._infer_replies:
                recorded, predictions = self._infer_replies[request_id]
                if recorded != digest:
                    raise ProtocolError(
                        "FAILED_PRECONDITION", f"request {request_id!r} was already answered for other data"
                    )
                return predictions
            allowed = np.ones(len(self._labels), dtype=bool)
            self._check_batch(sample_ids, smashed, allowed=allowed, split_name="dataset")
            self.top.eval()
            with torch.no_grad():
                predicted = self.top(smashed.to(self.device)).argmax(dim=1).cpu().numpy()
            for sid, pred in zip(sample_ids.tolist(), predicted.tolist()):
                # Only a sample's first prediction counts: re-asking cannot move the published accuracy.
                if self._is_test[sid] and sid not in self._test_correct:
                    self._test_correct[sid] = pred == int(self._labels[sid])
            self._infer_replies[request_id] = (digest, predicted.tolist())
            while len(self._infer_replies) > self.config.label_party.infer_window:
                self._infer_replies.popitem(last=False)
            return predicted.tolist()

    def finish(self, *, run_id: str, session: str) -> dict:
        """Returns the task metrics this party publishes (aggregates only) and marks the run finished.

        Accepted once, and only with the session secret of the last Hello."""
        self._check_run(run_id)
        if not secrets.compare_digest(session.encode(), (self._session or "").encode()):
            raise ProtocolError("PERMISSION_DENIED", "Finish must come from the peer that said Hello (session secret)")
        with self._lock:
            if self.finished.is_set():
                raise ProtocolError("FAILED_PRECONDITION", f"run {self.run_id} has finished")
            spent = self.defense.privacy_spent(steps=self._steps_applied)
            metrics = {
                "test_accuracy": float(np.mean(list(self._test_correct.values())))
                if self._test_correct
                else float("nan"),
                "test_samples": len(self._test_correct),
                "defense": self.defense.name,
                "epsilon": spent[0] if spent else None,
                "delta": spent[1] if spent else None,
                "final_train_loss": self._last_loss,
                "defense_metrics": self.defense.metrics(steps=self._steps_applied),
            }
        log.info("finished: %s", metrics)
        self.finished.set()
        return metrics
