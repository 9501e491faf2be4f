"""Channel and server factories (message limits, keepalive, TLS, token), the
standard health and reflection services, and the one retry helper."""

from __future__ import annotations

import logging
import random
import time
from concurrent import futures
from typing import Callable, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from splitleak.auth import TokenAuthInterceptor

log = logging.getLogger(__name__)

__all__ = [
    "RETRYABLE",
    "add_health_and_reflection",
    "auth_metadata",
    "bind_server",
    "call_with_retry",
    "create_channel",
    "create_server",
]

T = TypeVar("T")

# DEADLINE_EXCEEDED is safe to retry because TrainStep and Infer are idempotent.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _options(transport_cfg) -> list[tuple[str, int]]:
    limit = transport_cfg.max_message_mb * 1024 * 1024
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.keepalive_time_ms", transport_cfg.keepalive_s * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ]


def create_server(transport_cfg, *, max_workers: int = 8, interceptors=()) -> grpc.Server:
    """Returns an unstarted server with the run's limits and, if a token is set, token checking."""
    chain = list(interceptors)
    if transport_cfg.token:
        chain.insert(0, TokenAuthInterceptor(transport_cfg.token))
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=_options(transport_cfg),
        interceptors=chain,
    )


def bind_server(server: grpc.Server, host: str, port: int, transport_cfg) -> int:
    """Returns the bound port (port 0 picks a free one); TLS when a cert and key are configured."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tls = transport_cfg.tls
    if tls.cert and tls.key:
        credentials = grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.ca.read_bytes() if tls.ca else None,
            require_client_auth=tls.ca is not None,
        )
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    return bound


def create_channel(address: str, transport_cfg, *, interceptors=()) -> grpc.Channel:
    """Returns a channel to address with the run's limits, TLS and client interceptors."""
    tls = transport_cfg.tls
    if tls.ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca.read_bytes(),
            private_key=tls.key.read_bytes() if tls.key else None,
            certificate_chain=tls.cert.read_bytes() if tls.cert else None,
        )
        channel = grpc.secure_channel(address, credentials, options=_options(transport_cfg))
    else:
        channel = grpc.insecure_channel(address, options=_options(transport_cfg))
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel


def auth_metadata(transport_cfg) -> tuple[tuple[str, str], ...]:
    """Returns the call metadata that carries the bearer token, if one is set."""
    return (("authorization", f"Bearer {transport_cfg.token}"),) if transport_cfg.token else ()


def add_health_and_reflection(server: grpc.Server, service_names: list[str]) -> health.HealthServicer:
    """Adds grpc.health.v1 and server reflection; returns the health servicer (all names SERVING)."""
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *service_names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return health_servicer


def call_with_retry(
    call: Callable[[], T],
    *,
    retry_s: float,
    what: str,
    base_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
) -> T:
    """Returns call()'s result, retrying UNAVAILABLE and DEADLINE_EXCEEDED with jittered exponential backoff
    for up to retry_s seconds: long enough to ride out a restart of the other side.

    Every other status (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED,
    FAILED_PRECONDITION, ...) is raised at once: retrying cannot fix it. An outage is
    warned about once when it starts and once when it ends, not at every attempt.
    """
    attempt = 0
    started = None
    while True:
        try:
            result = call()
        except grpc.RpcError as err:
            if err.code() not in RETRYABLE:
                raise
            now = time.monotonic()
            if started is None:
                started = now
                log.warning(
                    "%s failed with %s (%s); retrying for up to %.0fs", what, err.code().name, err.details(), retry_s
                )
            if now - started >= retry_s:
                log.error("%s: giving up after %.0fs of %s", what, now - started, err.code().name)
                raise
            delay = min(max_delay_s, base_delay_s * 2**attempt, max(0.0, started + retry_s - now))
            time.sleep(delay * (0.5 + random.random() / 2))
            attempt += 1
            continue
        if started is not None:
            log.warning("%s went through after %.1fs and %d retries", what, time.monotonic() - started, attempt)
        return result
