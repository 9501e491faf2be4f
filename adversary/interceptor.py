"""The adversary as an in-process client interceptor on the feature party's channel."""

from __future__ import annotations

import time

import grpc

from adversary.tap import AdversaryFailed

__all__ = ["ResumeRefused", "TapInterceptor"]


class ResumeRefused(grpc.RpcError):
    """The adversary holds no checkpoint of the step the feature party resumes from (FAILED_PRECONDITION)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.FAILED_PRECONDITION

    def details(self) -> str:
        return self._details


class TapInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Hands every completed exchange to the tap; the call itself is left untouched."""

    def __init__(self, tap) -> None:
        self._tap = tap

    def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        name = method.rsplit("/", 1)[-1]
        if self._tap.failure is not None:
            raise AdversaryFailed(self._tap.failure)
        if name == "Hello" and request.HasField("resume_from"):
            point = (request.resume_from.epoch, request.resume_from.step)
            if not self._tap.holds(*point):
                raise ResumeRefused(f"adversary cannot resume: no readable checkpoint of step {point}")
        start = time.perf_counter()
        outcome = continuation(client_call_details, request)
        latency = time.perf_counter() - start
        error = outcome.exception()
        if error is None:
            self._tap.observe(name, request, outcome.result(), latency_s=latency)
        else:
            self._tap.observe(name, request, None, latency_s=latency, error=f"{error.code().name}: {error.details()}")
        return outcome
