"""Proto in, proto out: decodes requests, calls the LabelParty, encodes replies.

Used behind the gRPC servicer and, for in-process runs, called directly.
"""

from __future__ import annotations

import math

from party_label.party import LabelParty
from splitleak.codec import ids_from_proto, tensor_from_proto, tensor_to_proto
from splitleak.v1 import splitleak_pb2 as pb

__all__ = ["LabelService"]


class LabelService:
    def __init__(self, party: LabelParty) -> None:
        self.party = party

    def hello(self, request: pb.HelloRequest) -> pb.HelloReply:
        resume = (request.resume_from.epoch, request.resume_from.step) if request.HasField("resume_from") else None
        epoch, step, session = self.party.hello(
            protocol_version=request.protocol_version,
            run_id=request.run_id,
            cut_shape=tuple(request.cut_shape),
            num_classes=request.num_classes,
            batch_size=request.batch_size,
            config_digest=request.config_digest,
            steps_per_epoch=request.steps_per_epoch,
            resume_from=resume,
            from_start=request.from_start,
        )
        return pb.HelloReply(
            protocol_version=request.protocol_version,
            run_id=self.party.run_id,
            defense=self.party.defense.name,
            returns_predictions=self.party.config.label_party.return_predictions,
            next_epoch=epoch,
            next_step=step,
            session=session,
        )

    def train_step(self, request: pb.TrainStepRequest) -> pb.TrainStepReply:
        result = self.party.train_step(
            run_id=request.run_id,
            epoch=request.epoch,
            step=request.step,
            sample_ids=ids_from_proto(request.sample_ids),
            smashed=tensor_from_proto(request.smashed, what="smashed tensor"),
        )
        return pb.TrainStepReply(
            cut_grad=tensor_to_proto(result.cut_grad, request.smashed.dtype),
            loss=result.loss,
            replayed=result.replayed,
        )

    def infer(self, request: pb.InferRequest) -> pb.InferReply:
        predictions = self.party.infer(
            run_id=request.run_id,
            request_id=request.request_id,
            sample_ids=ids_from_proto(request.sample_ids),
            smashed=tensor_from_proto(request.smashed, what="smashed tensor"),
        )
        shared = predictions if self.party.config.label_party.return_predictions else []
        return pb.InferReply(count=len(predictions), predictions=shared)

    def finish(self, request: pb.FinishRequest) -> pb.FinishReply:
        metrics = self.party.finish(run_id=request.run_id, session=request.session)
        reply = pb.FinishReply(
            test_accuracy=metrics["test_accuracy"],
            test_samples=metrics["test_samples"],
            defense=metrics["defense"],
            final_train_loss=metrics["final_train_loss"] if math.isfinite(metrics["final_train_loss"]) else 0.0,
            defense_metrics=metrics["defense_metrics"],
        )
        if metrics["epsilon"] is not None:
            reply.epsilon = metrics["epsilon"]
            reply.delta = metrics["delta"]
        return reply
