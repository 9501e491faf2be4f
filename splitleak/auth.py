"""Server interceptor that requires a bearer token on every call but health checks."""

from __future__ import annotations

import hmac

import grpc

__all__ = ["TokenAuthInterceptor"]

_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class TokenAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (transport.token)")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(_OPEN_PREFIXES):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        if hmac.compare_digest(metadata.get("authorization", "").encode(), self._expected):
            return continuation(handler_call_details)
        return self._deny
