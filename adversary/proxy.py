"""The adversary as a sidecar proxy: its own gRPC server that forwards every
LabelParty call upstream unchanged (as opaque bytes) and hands a copy to the tap."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from adversary.tap import MESSAGES, AdversaryFailed, Tap
from splitleak.transport import add_health_and_reflection, bind_server, create_channel, create_server
from splitleak.v1 import splitleak_pb2 as pb

log = logging.getLogger(__name__)

__all__ = ["RunningProxy", "serve_proxy"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LabelParty"].full_name
# Metadata that gRPC sets itself and must not be copied onto the upstream call.
_HOP_METADATA = {"user-agent", "grpc-timeout", "content-type", "te", "grpc-accept-encoding", "accept-encoding"}


class _Forwarder:
    def __init__(self, channel: grpc.Channel, tap: Tap, default_deadline_s: float) -> None:
        self._channel = channel
        self._tap = tap
        self._default_deadline_s = default_deadline_s

    def handler(self, name: str):
        upstream = self._channel.unary_unary(f"/{SERVICE_NAME}/{name}")  # bytes in, bytes out

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            if self._tap.failure is not None:
                context.abort(grpc.StatusCode.UNAVAILABLE, self._tap.failure)
            if name == "Hello":
                try:
                    hello = pb.HelloRequest.FromString(request)
                except DecodeError as err:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a valid HelloRequest: {err}")
                self._check_resume(hello, context)
            remaining = context.time_remaining()
            timeout = remaining if remaining is not None and remaining < 1e6 else self._default_deadline_s
            metadata = tuple((k, v) for k, v in context.invocation_metadata() if k not in _HOP_METADATA)
            start = time.perf_counter()
            try:
                reply = upstream(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as err:
                self._observe(
                    context,
                    name,
                    request,
                    None,
                    latency_s=time.perf_counter() - start,
                    error=f"{err.code().name}: {err.details()}",
                )
                context.abort(err.code(), err.details() or "upstream error")
            self._observe(context, name, request, reply, latency_s=time.perf_counter() - start)
            return reply

        return grpc.unary_unary_rpc_method_handler(forward)

    def _observe(self, context, *args, **kwargs) -> None:
        try:
            self._tap.observe(*args, **kwargs)
        except AdversaryFailed as err:
            # Loudly: a run that goes on unrecorded would be worse than one that stops.
            context.abort(grpc.StatusCode.UNAVAILABLE, str(err))

    def _check_resume(self, hello: pb.HelloRequest, context) -> None:
        if hello.HasField("resume_from"):
            point = (hello.resume_from.epoch, hello.resume_from.step)
            if not self._tap.holds(*point):
                held = ", ".join(map(str, self._tap.checkpoints.steps())) or "none"
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"adversary cannot resume: no readable checkpoint of step {point} (it holds: {held})",
                )


@dataclass
class RunningProxy:
    server: grpc.Server
    port: int
    tap: Tap
    channel: grpc.Channel

    def stop(self, grace_s: float = 2.0) -> None:
        self.server.stop(grace_s).wait()
        self.channel.close()
        self.tap.close()


def serve_proxy(config, tap: Tap) -> RunningProxy:
    """Returns the started proxy (adversary.port 0 picks a free port), forwarding to adversary.upstream."""
    adv = config.adversary
    channel = create_channel(adv.upstream, config.transport)
    forwarder = _Forwarder(channel, tap, config.feature_party.deadline_s)
    # With a token configured the proxy checks it too (and forwards it): a local client without it is refused
    # here, before anything reaches the label party or the log.
    server = create_server(config.transport)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {name: forwarder.handler(name) for name in MESSAGES}),)
    )
    add_health_and_reflection(server, [SERVICE_NAME])
    port = bind_server(server, adv.host, adv.port, config.transport)
    server.start()
    log.info("adversary proxy on %s:%d forwarding to %s", adv.host, port, adv.upstream)
    return RunningProxy(server, port, tap, channel)
