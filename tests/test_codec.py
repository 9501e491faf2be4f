import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitleak.codec import ids_from_proto, tensor_from_proto, tensor_to_proto
from splitleak.errors import ProtocolError
from splitleak.v1 import splitleak_pb2 as pb

shapes = st.lists(st.integers(0, 5), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(["float32", "float16", "bfloat16"]))
def test_round_trip_is_the_cast(shape, seed, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 10
    msg = tensor_to_proto(x, dtype)
    back = tensor_from_proto(pb.Tensor.FromString(msg.SerializeToString()))
    assert back.dtype == torch.float32 and list(back.shape) == shape
    expected = x.to(getattr(torch, dtype)).to(torch.float32)
    assert torch.equal(back, expected)


def test_float32_is_bit_exact_and_little_endian():
    x = torch.tensor([1.0, -2.5, 3e-8], dtype=torch.float32)
    msg = tensor_to_proto(x)
    assert msg.data == np.array([1.0, -2.5, 3e-8], dtype="<f4").tobytes()
    assert torch.equal(tensor_from_proto(msg), x)


@pytest.mark.parametrize(
    "msg, match",
    [
        (pb.Tensor(dtype="int8", shape=[1], data=b"\x00"), "dtype 'int8'"),
        (pb.Tensor(dtype="float32", shape=[2, 2], data=b"\x00" * 15), "needs 16 bytes, got 15"),
        (pb.Tensor(dtype="float32", shape=[-1], data=b""), "negative dimension"),
        (pb.Tensor(dtype="float32", shape=[1], data=np.array([np.nan], "<f4").tobytes()), "NaN or Inf"),
        (pb.Tensor(dtype="float16", shape=[1], data=np.array([np.inf], "<f2").tobytes()), "NaN or Inf"),
        (pb.Tensor(dtype="float32", shape=[1] * 65, data=b"\x00" * 4), "65 dimensions; at most 8"),
        (pb.Tensor(dtype="float32", shape=[2**62, 2**62, 0], data=b""), "a dimension above 2147483648"),
        (pb.Tensor(dtype="float32", shape=[2**31, 2**31], data=b""), "needs 18446744073709551616 bytes, got 0"),
    ],
)
def test_malformed_tensors_are_invalid_argument(msg, match):
    with pytest.raises(ProtocolError, match=match) as err:
        tensor_from_proto(msg)
    assert err.value.status == "INVALID_ARGUMENT"


def test_duplicate_ids_are_refused():
    with pytest.raises(ProtocolError, match="duplicate"):
        ids_from_proto([1, 2, 1])
