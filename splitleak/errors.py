"""Errors that domain code raises and the gRPC layer turns into status codes."""

from __future__ import annotations

__all__ = ["ProtocolError"]


class ProtocolError(Exception):
    """A request the receiving party refuses; status names a grpc.StatusCode member."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
