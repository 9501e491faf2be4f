"""The feature party's link to the label party: over gRPC, or in-process for speed.

Both take and return the same protocol messages, so the training loop is one
piece of code whichever transport carries it.
"""

from __future__ import annotations

import time


from splitleak.transport import auth_metadata, call_with_retry, create_channel
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.v1 import splitleak_pb2_grpc as pb_grpc

__all__ = ["GrpcLink", "InProcLink"]


class GrpcLink:
    """Calls the label party (or the adversary proxy in front of it) with deadlines and retries."""

    def __init__(self, config, *, interceptors=()) -> None:
        fp = config.feature_party
        self._channel = create_channel(fp.label_party_address, config.transport, interceptors=interceptors)
        self._stub = pb_grpc.LabelPartyStub(self._channel)
        self._deadline_s = fp.deadline_s
        self._retry_s = fp.retry_s
        self._metadata = auth_metadata(config.transport)
        self.address = fp.label_party_address

    def _call(self, method, request, what: str, *, wait_for_ready: bool = False):
        return call_with_retry(
            lambda: method(request, timeout=self._deadline_s, metadata=self._metadata, wait_for_ready=wait_for_ready),
            retry_s=self._retry_s,
            what=what,
        )

    def hello(self, request: pb.HelloRequest) -> pb.HelloReply:
        # wait_for_ready: the label party may still be starting (compose, two hosts).
        return self._call(self._stub.Hello, request, f"Hello to {self.address}", wait_for_ready=True)

    def train_step(self, request: pb.TrainStepRequest) -> pb.TrainStepReply:
        return self._call(self._stub.TrainStep, request, f"TrainStep ({request.epoch}, {request.step})")

    def infer(self, request: pb.InferRequest) -> pb.InferReply:
        return self._call(self._stub.Infer, request, f"Infer {request.request_id}")

    def finish(self, request: pb.FinishRequest) -> pb.FinishReply:
        return self._call(self._stub.Finish, request, "Finish")

    def close(self) -> None:
        self._channel.close()


class InProcLink:
    """Calls a LabelService in this process; an optional tap sees every exchange as the wire would carry it."""

    def __init__(self, service, *, tap=None) -> None:
        self._service = service
        self._tap = tap

    def _call(self, name: str, handler, request):
        start = time.perf_counter()
        reply = handler(request)
        if self._tap is not None:
            self._tap.observe(name, request, reply, latency_s=time.perf_counter() - start)
        return reply

    def hello(self, request):
        return self._call("Hello", self._service.hello, request)

    def train_step(self, request):
        return self._call("TrainStep", self._service.train_step, request)

    def infer(self, request):
        return self._call("Infer", self._service.infer, request)

    def finish(self, request):
        return self._call("Finish", self._service.finish, request)

    def close(self) -> None:
        pass
