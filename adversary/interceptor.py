"""The adversary as an in-process client interceptor on the feature party's channel."""

from __future__ import annotations

import time

import grpc

__all__ = ["TapInterceptor"]


class TapInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Hands every completed exchange to the tap; the call itself is left untouched."""

    def __init__(self, tap) -> None:
        self._tap = tap

    def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        name = method.rsplit("/", 1)[-1]
        start = time.perf_counter()
        outcome = continuation(client_call_details, request)
        latency = time.perf_counter() - start
        error = outcome.exception()
        if error is None:
            self._tap.observe(name, request, outcome.result(), latency_s=latency)
        else:
            self._tap.observe(name, request, None, latency_s=latency, error=f"{error.code().name}: {error.details()}")
        return outcome
