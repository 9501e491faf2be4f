"""The adversary's core: it sees every exchange, logs it, captures tensors and
runs the attacks, all on a worker thread fed by a bounded queue so that the
forwarding path never waits on disk or on an attack.

The proxy and the client interceptor both feed observe(); so does the
in-process link. All three therefore write the same logs.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adversary.engine import AttackEngine
from adversary.leakage import headline, leakage
from adversary.scoring import Scorer
from splitleak.codec import tensor_from_proto
from splitleak.data import load_dataset, read_known_samples
from splitleak.entry import device_name
from splitleak.runlog import JsonlWriter, write_json_atomic
from splitleak.v1 import splitleak_pb2 as pb

log = logging.getLogger(__name__)

__all__ = ["MESSAGES", "SIDE_CHANNEL", "Tap", "build_tap"]

# Method name -> (request type, reply type), to parse what the proxy forwards as bytes.
MESSAGES = {
    "Hello": (pb.HelloRequest, pb.HelloReply),
    "TrainStep": (pb.TrainStepRequest, pb.TrainStepReply),
    "Infer": (pb.InferRequest, pb.InferReply),
    "Finish": (pb.FinishRequest, pb.FinishReply),
}
# Where the feature party hands its eval-mode embeddings of the known samples to its adversary.
SIDE_CHANNEL = Path("side_channel") / "known_smashed.npz"


@dataclass
class _Event:
    method: str
    request: Any
    reply: Any
    latency_s: float
    wall: float
    error: str | None = None


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

    def __init__(self, config, *, engine: AttackEngine | None, scorer: Scorer | None) -> None:
        self.config = config
        self.run_dir = Path(config.run.dir)
        self.engine = engine
        self.scorer = scorer
        self.capture = config.adversary.capture
        # What a previous run in the same directory left would mix with this run's records.
        for stale in ("tensors", "predictions"):
            shutil.rmtree(self.run_dir / stale, ignore_errors=True)
        (self.run_dir / SIDE_CHANNEL).unlink(missing_ok=True)
        self.log = JsonlWriter(self.run_dir / "attack_log.jsonl")
        self._queue: queue.Queue[_Event | None] = queue.Queue(maxsize=config.adversary.queue_size)
        self._worker = threading.Thread(target=self._work, name="adversary-tap", daemon=True)
        self._train: _Phase | None = None
        self._infer: _Phase | None = None
        self._rounds = 0
        self._hello: dict | None = None
        self._results: list[dict] = []
        self._time_to_leak: dict[str, dict | None] = {}
        self._finish: dict | None = None
        self._started = time.time()
        self.finished = threading.Event()
        self._closed = False
        self._worker.start()

    # -- forwarding path -------------------------------------------------------------

    def observe(self, method: str, request, reply, *, latency_s: float, error: str | None = None) -> None:
        """Queues one exchange (protos, or their serialized bytes from the proxy); never drops it."""
        event = _Event(method, request, reply, latency_s, time.time(), error)
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            start = time.perf_counter()
            self._queue.put(event)
            waited = time.perf_counter() - start
            log.warning(
                "adversary worker is behind: queue of %d full, the exchange waited %.1f ms",
                self._queue.maxsize,
                waited * 1000,
            )
            self.log.write(
                {
                    "type": "lag",
                    "queue_size": self._queue.maxsize,
                    "waited_ms": round(waited * 1000, 3),
                    "method": method,
                    "t": time.time(),
                }
            )

    def close(self, timeout_s: float | None = None) -> None:
        """Drains the queue, runs what is pending, writes summary.json and closes the log."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            log.error("adversary worker did not drain within %s s; summary may be incomplete", timeout_s)
        self.log.close()

    # -- worker ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                break
            try:
                self._handle(event)
            except Exception as err:  # the worker must outlive one bad record, and say so
                log.exception("adversary could not process %s", event.method)
                self.log.write(
                    {"type": "error", "method": event.method, "error": f"{type(err).__name__}: {err}", "t": time.time()}
                )
        try:
            self._end_train_epoch()
            self._write_summary()
        except Exception:
            log.exception("adversary could not finish the run's records")

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
            self.log.write({"type": "error", **base, "error": event.error})
            return
        handler = getattr(self, f"_on_{event.method.lower()}")
        handler(request, reply, base)

    def _on_hello(self, request: pb.HelloRequest, reply: pb.HelloReply, base: dict) -> None:
        self._hello = {
            "run_id": request.run_id,
            "cut_shape": list(request.cut_shape),
            "num_classes": request.num_classes,
            "batch_size": request.batch_size,
            "defense": reply.defense,
        }
        self.log.write({"type": "hello", **base, **self._hello})

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
            self.log.write(record)
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
        self.log.write(record)

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
            self.log.write(record)
            return
        smashed = tensor_from_proto(request.smashed, what="smashed")
        self._rounds += 1
        record["round"] = self._rounds
        self._infer.steps.add(request.request_id)
        self._infer.ids.append(ids)
        self._infer.smashed.append(smashed)
        if self.engine is not None:
            record["attacks"] = self._score(self.engine.infer_round(ids, smashed), record)
        self.log.write(record)

    def _on_finish(self, request: pb.FinishRequest, reply: pb.FinishReply, base: dict) -> None:
        self._end_train_epoch()
        self._end_inference()
        self._finish = {
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
        self.log.write({"type": "finish", **base, **self._finish})
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
            record["attacks"] = self._score(results, record, keep=True)
        self.log.write(record)

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
            record["attacks"] = self._score(results, record, keep=True)
        self.log.write(record)

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

    def _score(self, results, record: dict, *, keep: bool = False) -> list[dict]:
        scored = []
        for result in results:
            entry = result.log_entry()
            if record["type"] == "round":
                shown = result.predictions if result.batch_predictions is None else result.batch_predictions
                entry["predictions"] = shown.tolist()
            if self.scorer is not None and result.sample_ids is not None:
                entry.update(self.scorer.score(result.sample_ids, result.predictions, result.scores))
            scored.append(entry)
            key = f"{entry['attack']}/{entry['data']}/{entry['phase']}"
            if record["type"] == "round" and entry.get("accuracy") is not None:
                if key not in self._time_to_leak:
                    self._time_to_leak[key] = None
                if self._time_to_leak[key] is None and entry["accuracy"] >= self.config.adversary.leak_threshold:
                    self._time_to_leak[key] = {
                        "round": record["round"],
                        "epoch": record.get("epoch"),
                        "step": record.get("step"),
                        "accuracy": entry["accuracy"],
                    }
            if keep:
                kept = ("attack", "data", "phase", "accuracy", "auc", "n", "seconds", "reference")
                self._results.append(
                    {k: entry.get(k) for k in kept}
                    | {"epoch": record.get("epoch"), "round": record.get("round")}
                    | {k: entry[k] for k in ("agreement", "agreement_with_previous_epoch") if k in entry}
                )
        return scored

    def _write_summary(self) -> None:
        hello = self._hello or {}
        summary = {
            "run_id": hello.get("run_id", self.config.run.id),
            "dataset": self.config.data.name,
            "num_classes": hello.get("num_classes"),
            "cut_shape": hello.get("cut_shape"),
            "top_layers": self.config.model.top_layers,
            "complete": self._finish is not None,
            **(self._finish or {"task": None, "defense": None, "timing": None}),
            "adversary": {
                "mode": self.config.adversary.mode,
                "device": self.config.adversary.device,
                "rounds_observed": self._rounds,
                "scored": self.scorer is not None,
                "seconds": time.time() - self._started,
            },
            "attacks": self._results,
            "time_to_leak": {"threshold": self.config.adversary.leak_threshold, **self._time_to_leak},
        }
        summary["leakage"] = leakage(
            self._results,
            self._time_to_leak.get("cumulative/both/train"),
            threshold=self.config.adversary.leak_threshold,
            scored=self.scorer is not None,
        )
        summary["headline"] = headline(summary)
        write_json_atomic(self.run_dir / "summary.json", summary)


def _save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def build_tap(config) -> Tap:
    """Returns the tap of a run: the attack engine with the attacker's prior knowledge, and the scorer if configured."""
    adv = config.adversary
    engine = None
    if adv.known_labels is not None:
        known_ids, known_labels = read_known_samples(adv.known_labels)
        num_classes = load_dataset(config.data, config.run.seed).num_classes
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
    return Tap(config, engine=engine, scorer=scorer)
