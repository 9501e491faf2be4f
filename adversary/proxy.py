"""The adversary as a sidecar proxy: its own gRPC server that forwards every
LabelParty call upstream unchanged (as opaque bytes) and hands a copy to the tap."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc

from adversary.tap import MESSAGES, Tap
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
            remaining = context.time_remaining()
            timeout = remaining if remaining is not None and remaining < 1e6 else self._default_deadline_s
            metadata = tuple((k, v) for k, v in context.invocation_metadata() if k not in _HOP_METADATA)
            start = time.perf_counter()
            try:
                reply = upstream(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as err:
                self._tap.observe(
                    name,
                    request,
                    None,
                    latency_s=time.perf_counter() - start,
                    error=f"{err.code().name}: {err.details()}",
                )
                context.abort(err.code(), err.details() or "upstream error")
            self._tap.observe(name, request, reply, latency_s=time.perf_counter() - start)
            return reply

        return grpc.unary_unary_rpc_method_handler(forward)


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
    # The proxy checks no token itself: it forwards the caller's, and the label party decides.
    server = create_server(config.transport.model_copy(update={"token": None}))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {name: forwarder.handler(name) for name in MESSAGES}),)
    )
    add_health_and_reflection(server, [SERVICE_NAME])
    port = bind_server(server, adv.host, adv.port, config.transport)
    server.start()
    log.info("adversary proxy on %s:%d forwarding to %s", adv.host, port, adv.upstream)
    return RunningProxy(server, port, tap, channel)
