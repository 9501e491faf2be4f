"""Tensor (de)serialization: raw little-endian bytes plus dtype and shape, never pickle."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from splitleak.errors import ProtocolError
from splitleak.v1 import splitleak_pb2 as pb

__all__ = ["WIRE_DTYPES", "tensor_from_proto", "tensor_to_proto", "ids_from_proto"]

WIRE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# Bounds on a wire shape, checked before anything is computed from it: a batch and a sample's shape take
# at most 8 dimensions (batch, channels, depth, height, width and to spare); no dimension is above 2^31.
MAX_DIMS = 8
MAX_DIM = 2**31

if sys.byteorder != "little":  # the wire format is little-endian raw memory
    raise ImportError("splitleak's tensor codec needs a little-endian host")


def tensor_to_proto(tensor: torch.Tensor, dtype: str = "float32") -> pb.Tensor:
    """Returns the wire form of tensor, cast to dtype."""
    wire = tensor.detach().to("cpu", WIRE_DTYPES[dtype]).contiguous()
    raw = wire.view(torch.int16) if dtype == "bfloat16" else wire  # numpy has no bfloat16
    return pb.Tensor(dtype=dtype, shape=list(wire.shape), data=raw.numpy().tobytes())


def tensor_from_proto(msg: pb.Tensor, *, what: str = "tensor") -> torch.Tensor:
    """Returns the float32 tensor in msg; raises ProtocolError(INVALID_ARGUMENT) if it is malformed."""
    if msg.dtype not in WIRE_DTYPES:
        raise ProtocolError("INVALID_ARGUMENT", f"{what} has dtype {msg.dtype!r}; supported: {', '.join(WIRE_DTYPES)}")
    if any(d < 0 for d in msg.shape):
        raise ProtocolError("INVALID_ARGUMENT", f"{what} has a negative dimension in shape {list(msg.shape)}")
    if len(msg.shape) > MAX_DIMS:
        raise ProtocolError(
            "INVALID_ARGUMENT", f"{what} has {len(msg.shape)} dimensions; at most {MAX_DIMS} are accepted"
        )
    if any(d > MAX_DIM for d in msg.shape):
        raise ProtocolError("INVALID_ARGUMENT", f"{what} has a dimension above {MAX_DIM} in shape {list(msg.shape)}")
    dtype = WIRE_DTYPES[msg.dtype]
    expected = math.prod(msg.shape) * torch.empty((), dtype=dtype).element_size()
    if len(msg.data) != expected:
        raise ProtocolError(
            "INVALID_ARGUMENT",
            f"{what} of shape {list(msg.shape)} and dtype {msg.dtype} needs {expected} bytes, got {len(msg.data)}",
        )
    if dtype == torch.bfloat16:
        flat = torch.from_numpy(np.frombuffer(msg.data, dtype=np.int16).copy()).view(torch.bfloat16)
    else:
        flat = torch.from_numpy(np.frombuffer(msg.data, dtype=np.dtype(msg.dtype)).copy())
    tensor = flat.reshape(tuple(msg.shape)).to(torch.float32)
    if not torch.isfinite(tensor).all():
        raise ProtocolError("INVALID_ARGUMENT", f"{what} contains NaN or Inf")
    return tensor


def ids_from_proto(sample_ids, *, what: str = "sample_ids") -> np.ndarray:
    """Returns the sample ids of a message as int64, refusing duplicates."""
    ids = np.asarray(sample_ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ProtocolError("INVALID_ARGUMENT", f"{what} holds duplicate sample ids")
    return ids
