"""The adversary's core: it sees every exchange, logs it, captures tensors and
runs the attacks, all on a worker thread fed by a bounded queue so that the
forwarding path never waits on disk or on an attack.

The proxy and the client interceptor both feed observe(); so does the
in-process link. All three therefore write the same logs.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adversary.engine import AttackEngine
from adversary.summary import build_summary
from adversary.scoring import Scorer
from splitleak.checkpoint import CheckpointError, Checkpoints, is_boundary, keep_for
from splitleak.codec import tensor_from_proto
from splitleak.data import load_dataset, read_known_samples
from splitleak.entry import device_name
from splitleak.runlog import SIDE_CHANNEL, JsonlWriter, read_jsonl, write_json_atomic
from splitleak.v1 import splitleak_pb2 as pb

log = logging.getLogger(__name__)

__all__ = ["AdversaryFailed", "MESSAGES", "Tap", "build_tap"]

# Method name -> (request type, reply type), to parse what the proxy forwards as bytes.
MESSAGES = {
    "Hello": (pb.HelloRequest, pb.HelloReply),
    "TrainStep": (pb.TrainStepRequest, pb.TrainStepReply),
    "Infer": (pb.InferRequest, pb.InferReply),
    "Finish": (pb.FinishRequest, pb.FinishReply),
}


@dataclass
class _Event:
    method: str
    request: Any
    reply: Any
    latency_s: float
    wall: float
    error: str | None = None
    size: int = 0


class AdversaryFailed(RuntimeError):
    """The adversary's worker has stopped (e.g. its disk is full): exchanges can no longer be recorded."""


class _Front:
    """The forwarding path's queue to the worker: bounded in exchanges and in bytes; a put waits while it is
    full (the caller is told, to log it) and fails at once once the worker has died."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: list[_Event | None] = []
        self._bytes = 0
        self._cond = threading.Condition()
        self._unfinished = 0
        self.failure: str | None = None

    def _full(self, size: int) -> bool:
        return bool(self._items) and (len(self._items) >= self.max_items or self._bytes + size > self.max_bytes)

    def put(self, event: _Event | None, on_wait=None) -> float:
        """Queues an event; returns how long it waited for room (seconds); raises AdversaryFailed."""
        size = 0 if event is None else event.size
        with self._cond:
            if self.failure is not None and event is not None:
                raise AdversaryFailed(self.failure)
            waited = 0.0
            if self._full(size):
                if on_wait is not None:
                    on_wait(len(self._items), self._bytes)
                start = time.perf_counter()
                while self._full(size) and self.failure is None:
                    self._cond.wait(0.5)
                waited = time.perf_counter() - start
            if self.failure is not None and event is not None:
                raise AdversaryFailed(self.failure)
            self._items.append(event)
            self._bytes += size
            self._unfinished += 1
            self._cond.notify_all()
            return waited

    def get(self) -> _Event | None:
        with self._cond:
            while not self._items:
                self._cond.wait()
            event = self._items.pop(0)
            self._bytes -= 0 if event is None else event.size
            self._cond.notify_all()
            return event

    def done(self) -> None:
        with self._cond:
            self._unfinished -= 1
            self._cond.notify_all()

    def fail(self, message: str) -> None:
        with self._cond:
            self.failure = message
            self._cond.notify_all()


@dataclass
class _Phase:
    """The rounds of one epoch (or of the inference pass), kept for epoch-end attacks and capture."""

    epoch: int
    ids: list[np.ndarray] = field(default_factory=list)
    smashed: list[torch.Tensor] = field(default_factory=list)
    grad: list[torch.Tensor] = field(default_factory=list)
    steps: set = field(default_factory=set)

    def sorted_arrays(self) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
        """Returns (ids, smashed, grad) with rows ordered by sample id, emptying the phase.

        Each round's rows are written straight to their sorted places and the round is let go, so an
        epoch's vectors are held once (plus one round), never concatenated and then reordered.
        """
        ids = np.concatenate(self.ids)
        order = np.argsort(ids, kind="stable")
        place = np.empty_like(order)
        place[order] = np.arange(len(order))
        sizes = [len(i) for i in self.ids]
        return ids[order], _gather(self.smashed, place, sizes), _gather(self.grad, place, sizes) if self.grad else None


def _gather(rounds: list[torch.Tensor], place: np.ndarray, sizes: list[int]) -> torch.Tensor:
    """Returns the rounds' rows stacked at their places; the list is emptied round by round."""
    out = torch.empty((len(place), *rounds[0].shape[1:]), dtype=rounds[0].dtype)
    start = 0
    for size in sizes:
        out[torch.as_tensor(place[start : start + size])] = rounds.pop(0)
        start += size
    return out


class Tap:
    """Observes exchanges on the forwarding path; logs, captures and attacks on its own worker."""

    def __init__(self, config, *, engine: AttackEngine | None, scorer: Scorer | None, resume: bool = False) -> None:
        self.config = config
        self.run_dir = Path(config.run.dir)
        self.engine = engine
        self.scorer = scorer
        self.capture = config.adversary.capture
        if not resume:
            # What a previous run in the same directory left would mix with this run's records.
            for stale in ("tensors", "predictions"):
                shutil.rmtree(self.run_dir / stale, ignore_errors=True)
            (self.run_dir / SIDE_CHANNEL).unlink(missing_ok=True)
        # A resumed run appends to its log; a fresh one starts it.
        self.log = JsonlWriter(self.run_dir / "attack_log.jsonl", append=resume)
        self.checkpoints = Checkpoints(self.run_dir, "adversary", keep=keep_for(config, "adversary"))
        self._front = _Front(config.adversary.queue_size, config.adversary.queue_mb * 2**20)
        self._worker = threading.Thread(target=self._work, name="adversary-tap", daemon=True)
        self._train: _Phase | None = None
        self._infer: _Phase | None = None
        self._rounds = 0
        self._steps_per_epoch = 0
        # Resumed: restore at the first Hello (from its resume_from, or from nothing).
        self._restore_pending = resume
        # Keys of the records a crashed run wrote after the state restored: written again, marked duplicate.
        self._orphans: set[tuple] = set()
        self.finished = threading.Event()
        self.failed = threading.Event()
        self.last_exchange = time.monotonic()
        self._closed = False
        self._worker.start()

    # -- forwarding path -------------------------------------------------------------

    def observe(self, method: str, request, reply, *, latency_s: float, error: str | None = None) -> None:
        """Queues one exchange (protos, or their serialized bytes from the proxy); never drops it.

        Raises AdversaryFailed once the worker has died: the forwarding path must then fail loudly
        rather than carry on unrecorded."""
        self.last_exchange = time.monotonic()
        size = sum(len(m) if isinstance(m, bytes) else m.ByteSize() for m in (request, reply) if m is not None)
        event = _Event(method, request, reply, latency_s, time.time(), error, size)

        def lagging(items: int, held: int) -> None:
            log.warning(
                "adversary worker is behind: %d exchanges (%.0f MB) queued; the exchange waits", items, held / 2**20
            )
            self.log.write(
                {
                    "type": "lag",
                    "queued": items,
                    "queued_mb": round(held / 2**20, 3),
                    "method": method,
                    "t": time.time(),
                }
            )

        waited = self._front.put(event, on_wait=lagging)
        if waited > 0:
            self.log.write({"type": "lag", "waited_ms": round(waited * 1000, 3), "method": method, "t": time.time()})

    @property
    def failure(self) -> str | None:
        """Returns why the worker stopped (None while it works)."""
        return self._front.failure

    def holds(self, epoch: int, step: int) -> bool:
        """Returns whether this adversary can resume from step (epoch, step): it holds its checkpoint, and the
        checkpoint reads back (one cut short by a copy is refused, named, so that the run goes back further)."""
        if (epoch, step) not in self.checkpoints.steps():
            return False
        damage = self.checkpoints.damage(epoch, step)
        if damage is not None:
            log.warning("%s; refusing to resume from it", damage)
        return damage is None

    def close(self, timeout_s: float | None = None) -> None:
        """Drains the queue, runs what is pending, writes summary.json and closes the log."""
        if self._closed:
            return
        self._closed = True
        self._front.put(None)
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            log.error("adversary worker did not drain within %s s; summary may be incomplete", timeout_s)
        try:
            self.log.close()
        except OSError as err:
            if self.failure is None:
                raise
            log.warning("closing %s after the failure: %s", self.log.path, err.strerror or err)

    # -- worker ----------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                event = self._front.get()
                if event is None:
                    self._front.done()
                    break
                try:
                    self._handle(event)
                except OSError:
                    raise  # the disk: nothing more can be recorded
                except Exception as err:  # the worker must outlive one bad record, and say so
                    log.exception("adversary could not process %s", event.method)
                    self._write(
                        {
                            "type": "error",
                            "method": event.method,
                            "error": f"{type(err).__name__}: {err}",
                            "t": time.time(),
                        }
                    )
                finally:
                    self._front.done()
            self._end_train_epoch()
            self._write_summary()
        except OSError as err:
            if isinstance(err, CheckpointError):
                reason = f"adversary {err}"
            else:
                reason = f"adversary cannot write {err.filename or self.log.path}: {err.strerror or err}"
            self._fail(reason)
        except Exception as err:  # a dead worker must never wedge the run silently
            log.exception("adversary worker died")
            self._fail(f"adversary worker died: {type(err).__name__}: {err}")

    def _fail(self, reason: str) -> None:
        log.error("%s; failing every further exchange", reason)
        self._front.fail(reason)
        self.failed.set()

    def _write(self, record: dict) -> None:
        """Writes one record; one that a crashed run already wrote (after the restored state) is marked duplicate."""
        key = _record_key(record)
        if key is not None and key in self._orphans:
            record["duplicate"] = True
            self._orphans.discard(key)
        self.log.write(record)

    @staticmethod
    def _parse(method: str, request, reply):
        req_type, reply_type = MESSAGES[method]
        if isinstance(request, bytes):
            request = req_type.FromString(request)
        if isinstance(reply, bytes):
            reply = reply_type.FromString(reply)
        return request, reply

    def _handle(self, event: _Event) -> None:
        if event.method not in MESSAGES:
            return
        request, reply = self._parse(event.method, event.request, event.reply)
        base = {
            "method": event.method,
            "request_bytes": request.ByteSize(),
            "reply_bytes": reply.ByteSize() if reply is not None else 0,
            "latency_ms": round(event.latency_s * 1000, 3),
            "t": event.wall,
        }
        if event.error is not None:
            self._write({"type": "error", **base, "error": event.error})
            return
        handler = getattr(self, f"_on_{event.method.lower()}")
        handler(request, reply, base)

    def _on_hello(self, request: pb.HelloRequest, reply: pb.HelloReply, base: dict) -> None:
        self._steps_per_epoch = request.steps_per_epoch
        resume = (request.resume_from.epoch, request.resume_from.step) if request.HasField("resume_from") else None
        if resume is not None or request.from_start or self._restore_pending:
            self._restore(resume)
        hello = {
            "run_id": request.run_id,
            "cut_shape": list(request.cut_shape),
            "num_classes": request.num_classes,
            "batch_size": request.batch_size,
            "steps_per_epoch": request.steps_per_epoch,
            "defense": reply.defense,
        }
        if resume is not None:
            hello["resumed_from"] = list(resume)
        self._write({"type": "hello", **base, **hello})

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint(self, epoch: int, step: int) -> None:
        self.checkpoints.save(
            epoch,
            step,
            {"engine": self.engine, "train": self._train, "rounds": self._rounds, "log_offset": self.log.offset()},
        )

    def _restore(self, point: tuple[int, int] | None) -> None:
        """Puts the adversary back in its state just after the round of step `point` (None: before any round);
        what the log holds beyond that state is the crashed run's, and is written again marked duplicate."""
        self._restore_pending = False
        offset = 0
        if point is not None:
            state = self.checkpoints.load(*point)
            self.engine, self._train, self._rounds, offset = (
                state["engine"],
                state["train"],
                state["rounds"],
                state["log_offset"],
            )
        else:
            self._train, self._rounds = None, 0
            if self.engine is not None:
                self.engine = self.engine.fresh()
        self._infer = None
        self._orphans = {key for key in map(_record_key, read_jsonl(self.log.path, start=offset)) if key is not None}
        log.info("restored the state of step %s; %d records after it will be written again", point, len(self._orphans))

    def _on_trainstep(self, request: pb.TrainStepRequest, reply: pb.TrainStepReply, base: dict) -> None:
        if self._infer is not None:
            log.warning("training step after inference began; attacks treat it as a new training epoch")
        if self._train is None or request.epoch != self._train.epoch:
            self._end_train_epoch()
            self._train = _Phase(epoch=request.epoch)
        key = (request.epoch, request.step)
        ids = np.asarray(request.sample_ids, dtype=np.int64)
        record = {
            "type": "round",
            "phase": "train",
            "epoch": request.epoch,
            "step": request.step,
            "samples": len(ids),
            "loss": reply.loss,
            "replayed": reply.replayed,
            **base,
            "sample_ids": ids.tolist(),
        }
        if key in self._train.steps:  # a retried step: the label party replayed its reply
            record["duplicate"] = True
            self._write(record)
            return
        smashed = tensor_from_proto(request.smashed, what="smashed")
        grad = tensor_from_proto(reply.cut_grad, what="cut_grad")
        self._rounds += 1
        record["round"] = self._rounds
        self._train.steps.add(key)
        self._train.ids.append(ids)
        self._train.smashed.append(smashed)
        self._train.grad.append(grad)
        if self.engine is not None:
            record["attacks"] = self._score(self.engine.train_round(ids, smashed, grad), record)
        self._write(record)
        every = self.config.run.checkpoint_every
        if self._steps_per_epoch and is_boundary(
            request.epoch, request.step, steps_per_epoch=self._steps_per_epoch, every=every
        ):
            self._checkpoint(request.epoch, request.step)

    def _on_infer(self, request: pb.InferRequest, reply: pb.InferReply, base: dict) -> None:
        self._end_train_epoch()
        if self._infer is None:
            self._infer = _Phase(epoch=-1)
        ids = np.asarray(request.sample_ids, dtype=np.int64)
        record = {
            "type": "round",
            "phase": "infer",
            "request_id": request.request_id,
            "samples": len(ids),
            **base,
            "sample_ids": ids.tolist(),
        }
        if request.request_id in self._infer.steps:
            record["duplicate"] = True
            self._write(record)
            return
        smashed = tensor_from_proto(request.smashed, what="smashed")
        self._rounds += 1
        record["round"] = self._rounds
        self._infer.steps.add(request.request_id)
        self._infer.ids.append(ids)
        self._infer.smashed.append(smashed)
        if self.engine is not None:
            record["attacks"] = self._score(self.engine.infer_round(ids, smashed), record)
        self._write(record)

    def _on_finish(self, request: pb.FinishRequest, reply: pb.FinishReply, base: dict) -> None:
        self._end_train_epoch()
        self._end_inference()
        finish = {
            "task": {
                "test_accuracy": reply.test_accuracy if reply.test_samples else None,
                "test_samples": reply.test_samples,
                "epochs": request.epochs,
                "final_train_loss": reply.final_train_loss,
                "failure": request.failure or None,
            },
            "defense": {
                "name": reply.defense,
                "epsilon": reply.epsilon if reply.HasField("epsilon") else None,
                "delta": reply.delta if reply.HasField("delta") else None,
                **dict(reply.defense_metrics),
            },
            "timing": {
                "train_seconds": request.train_seconds,
                "rounds": request.train_rounds,
                "infer_seconds": request.infer_seconds,
                "infer_rounds": request.infer_rounds,
            },
        }
        self._write({"type": "finish", **base, **finish})
        self._write_summary()
        self.finished.set()

    # -- epoch ends ------------------------------------------------------------------

    def _end_train_epoch(self) -> None:
        phase, self._train = self._train, None
        if phase is None or not phase.ids:
            return
        ids, smashed, grad = phase.sorted_arrays()
        record = {
            "type": "epoch",
            "phase": "train",
            "epoch": phase.epoch,
            "samples": len(ids),
            "rounds": len(phase.steps),
            "round": self._rounds,
            "t": time.time(),
        }
        if self.capture:
            path = self.run_dir / "tensors" / f"train-epoch-{phase.epoch:04d}.npz"
            _save_npz(path, ids=ids, smashed=smashed.numpy(), grad=grad.numpy())
            record["capture"] = str(path.relative_to(self.run_dir))
        if self.engine is not None:
            results = self.engine.train_epoch(phase.epoch, ids, smashed, grad)
            record["predictions"] = self._save_predictions(f"train-epoch-{phase.epoch:04d}", ids, results)
            record["attacks"] = self._score(results, record)
        self._write(record)

    def _end_inference(self) -> None:
        phase, self._infer = self._infer, None
        if phase is None or not phase.ids:
            return
        ids, smashed, _ = phase.sorted_arrays()
        record = {
            "type": "epoch",
            "phase": "infer",
            "epoch": None,
            "samples": len(ids),
            "rounds": len(phase.steps),
            "round": self._rounds,
            "t": time.time(),
        }
        if self.capture:
            path = self.run_dir / "tensors" / "infer.npz"
            _save_npz(path, ids=ids, smashed=smashed.numpy())
            record["capture"] = str(path.relative_to(self.run_dir))
        if self.engine is not None:
            side = self._read_side_channel()
            results = self.engine.infer_end(ids, smashed, side_channel=side)
            record["predictions"] = self._save_predictions("infer", ids, results)
            record["attacks"] = self._score(results, record)
        self._write(record)

    def _save_predictions(self, name: str, ids: np.ndarray, results) -> str:
        """Writes an epoch's predictions (one array per attack.data, rows as ids); returns its path in the run dir."""
        path = self.run_dir / "predictions" / f"{name}.npz"
        _save_npz(path, ids=ids, **{f"{r.attack}.{r.data}": r.predictions for r in results})
        return str(path.relative_to(self.run_dir))

    def _read_side_channel(self) -> tuple[np.ndarray, torch.Tensor] | None:
        path = self.run_dir / SIDE_CHANNEL
        if not path.exists():
            return None
        with np.load(path) as f:
            return f["ids"], torch.from_numpy(f["smashed"])

    # -- scoring and summary ------------------------------------------------------------

    def _score(self, results, record: dict) -> list[dict]:
        scored = []
        for result in results:
            entry = result.log_entry()
            if record["type"] == "round":
                shown = result.predictions if result.batch_predictions is None else result.batch_predictions
                entry["predictions"] = shown.tolist()
            if self.scorer is not None and result.sample_ids is not None:
                entry.update(self.scorer.score(result.sample_ids, result.predictions, result.scores))
            scored.append(entry)
        return scored

    def _write_summary(self) -> None:
        """Writes summary.json, built from the log alone (as `splitleak summarize` builds it)."""
        write_json_atomic(self.run_dir / "summary.json", build_summary(read_jsonl(self.log.path), self.config))


def _record_key(record: dict) -> tuple | None:
    """Returns what identifies a record across a resume (None for records written every time, e.g. hello)."""
    kind = record.get("type")
    if kind == "round":
        if record.get("phase") == "infer":
            return ("round", "infer", record.get("request_id"))
        return ("round", "train", record.get("epoch"), record.get("step"))
    if kind == "epoch":
        return ("epoch", record.get("phase"), record.get("epoch"))
    if kind == "finish":
        return ("finish",)
    return None


def _save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def build_tap(config, *, resume: bool = False) -> Tap:
    """Returns the tap of a run: the attack engine with the attacker's prior knowledge, and the scorer if configured.

    resume: the run is being continued; the log is appended to and the state restored at the first Hello."""
    adv = config.adversary
    engine = None
    if adv.known_labels is not None:
        num_classes = load_dataset(config.data, config.run.seed).num_classes
        known_ids, known_labels = read_known_samples(adv.known_labels, num_classes=num_classes)
        engine = AttackEngine(
            adv.attacks,
            known_ids=known_ids,
            known_labels=known_labels,
            num_classes=num_classes,
            device=adv.device,
            seed=config.run.seed,
        )
        log.info("attacks run on %s", device_name(adv.device))
    else:
        log.warning("adversary.known_labels is not set: exchanges are logged, no attack runs")
    scorer = Scorer.from_config(config) if adv.ground_truth else None
    return Tap(config, engine=engine, scorer=scorer, resume=resume)
