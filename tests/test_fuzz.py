"""Thousands of malformed messages of every kind at a real label-party process (and through the adversary proxy):
never UNKNOWN, never a crash, a valid request still answered afterwards, memory bounded."""

import json
import os
import subprocess
import sys
import time
from collections import Counter

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, small_config
from party_feature.link import GrpcLink
from party_feature.party import build_feature_party
from splitleak import PROTOCOL_VERSION
from splitleak.codec import tensor_to_proto
from splitleak.config import dump_config
from splitleak.data import split_ids
from splitleak.v1 import splitleak_pb2 as pb

pytestmark = pytest.mark.slow

CUT = 16
# Statuses a malformed message may get; UNKNOWN (an unhandled exception) and INTERNAL (a bug) may not.
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a message above gRPC's size limit
}
METHODS = {
    "Hello": (pb.HelloRequest, pb.HelloReply),
    "TrainStep": (pb.TrainStepRequest, pb.TrainStepReply),
    "Infer": (pb.InferRequest, pb.InferReply),
    "Finish": (pb.FinishRequest, pb.FinishReply),
}


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _start(module: str, config_path, ready, *extra) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--config", str(config_path), "--ready-file", str(ready), *extra],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, f"{module} exited with code {proc.returncode}"
        assert time.monotonic() < deadline, f"{module} never became ready"
        time.sleep(0.1)
    return proc


@pytest.fixture(scope="module", params=["label party", "through the adversary proxy"])
def target(request, tmp_path_factory):
    """A label-party process (behind an adversary-proxy process, for the second param) mid-run: a real
    feature party said Hello and trained a step. Yields (its name, channel, pid of the process under test,
    feature party, its link, a Counter of statuses)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    via_proxy = request.param != "label party"
    config = small_config(tmp, adversary={"mode": "proxy" if via_proxy else "off", "capture": False})
    config_path = tmp / "run.yaml"
    config_path.write_text(dump_config(config))
    procs = [_start("party_label", config_path, tmp / "label.json")]
    address = f"127.0.0.1:{json.loads((tmp / 'label.json').read_text())['port']}"
    if via_proxy:
        procs.append(_start("adversary", config_path, tmp / "adversary.json", f"adversary.upstream={address}"))
        address = f"127.0.0.1:{json.loads((tmp / 'adversary.json').read_text())['port']}"
    config = config.model_copy(
        update={"feature_party": config.feature_party.model_copy(update={"label_party_address": address})}
    )
    feature = build_feature_party(config)
    link = GrpcLink(config)
    feature.hello(link)
    channel = grpc.insecure_channel(address)
    ids = list(map(int, feature.split.train_ids[: config.train.batch_size]))
    code, details = _call(
        channel,
        "TrainStep",
        pb.TrainStepRequest(
            run_id="t", epoch=0, step=0, sample_ids=ids, smashed=tensor_to_proto(torch.zeros(len(ids), CUT))
        ),
    )
    assert code == grpc.StatusCode.OK, details
    try:
        yield request.param, channel, procs[-1].pid, feature, link, Counter()
    finally:
        channel.close()
        link.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(30) == 0, "the process under test must exit cleanly after the fuzzing"


# -- strategies: every field of every message, from valid to absurd; valid values often enough that
# messages get past the first check and reach the deeper ones (and some are applied) ----------------

_SPLIT = split_ids(1797, test_fraction=small_config(REPO).data.test_fraction, seed=0)  # digits, seed 0
TRAIN_IDS, TEST_IDS = list(map(int, _SPLIT.train_ids)), list(map(int, _SPLIT.test_ids))
ints64 = st.integers(-(2**63), 2**63 - 1)
uint32 = st.integers(0, 2**32 - 1)
texts = st.one_of(st.text(max_size=40), st.text(min_size=100, max_size=400))
run_ids = st.one_of(st.just("t"), st.just("t"), st.just("t"), texts)
floats32 = st.one_of(
    st.floats(-10, 10, width=32),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([3e38, -3e38, 1e30, 1e6, 1e5]),
)
sample_ids = st.one_of(
    st.lists(st.sampled_from(TRAIN_IDS), min_size=1, max_size=40, unique=True),
    st.lists(st.sampled_from(TEST_IDS), min_size=1, max_size=40, unique=True),
    st.lists(st.one_of(st.integers(-3, 2000), ints64), max_size=48),
)


@st.composite
def smashed(draw, rows: int):
    """A smashed tensor for `rows` samples: consistent (values anything from small to 3e38, NaN, Inf), with
    a wrong width or row count, raw bytes, or an absurd shape."""
    kind = draw(st.sampled_from(["consistent", "consistent", "wrong shape", "raw", "absurd shape"]))
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16", "float64", "int8", ""]) | st.text(max_size=8))
    if kind in ("consistent", "wrong shape"):
        cols = CUT if kind == "consistent" else draw(st.sampled_from([CUT - 1, 1, 0, CUT + 1]))
        rows = rows if kind == "consistent" else draw(st.integers(0, 40))
        fill = draw(st.one_of(st.none(), floats32))
        values = (
            [fill] * (rows * cols)
            if fill is not None
            else draw(st.lists(floats32, min_size=rows * cols, max_size=rows * cols))
        )
        return pb.Tensor(
            dtype="float32", shape=[rows, cols], data=torch.tensor(values, dtype=torch.float32).numpy().tobytes()
        )
    if kind == "raw":
        shape = draw(st.lists(st.integers(-2, 64), max_size=4))
        return pb.Tensor(dtype=dtype, shape=shape, data=draw(st.binary(max_size=4096)))
    shape = draw(st.lists(ints64, max_size=70))
    return pb.Tensor(dtype=dtype, shape=shape, data=draw(st.binary(max_size=64)))


@st.composite
def train_steps(draw):
    ids = draw(sample_ids)
    epoch, step = draw(st.one_of(st.sampled_from([(0, 0), (0, 1), (0, 2), (1, 0)]), st.tuples(uint32, uint32)))
    return "TrainStep", pb.TrainStepRequest(
        run_id=draw(run_ids), epoch=epoch, step=step, sample_ids=ids, smashed=draw(smashed(len(ids)))
    )


@st.composite
def infers(draw):
    ids = draw(sample_ids)
    request_id = draw(st.one_of(st.sampled_from(["r1", "r2", "r3"]), texts, st.text(min_size=129, max_size=2000)))
    return "Infer", pb.InferRequest(
        run_id=draw(run_ids), request_id=request_id, sample_ids=ids, smashed=draw(smashed(len(ids)))
    )


messages = st.one_of(
    st.builds(
        lambda *a: ("Hello", pb.HelloRequest(**dict(zip(HELLO_FIELDS, a)))),
        st.sampled_from([PROTOCOL_VERSION, 1, 0, 99]),
        run_ids,
        st.integers(0, 20),
        st.integers(0, 100),
        texts,
        st.lists(st.integers(0, 2**32 - 1), max_size=70),
        st.none() | st.builds(pb.StepPoint, epoch=uint32, step=uint32),
        uint32,
        st.booleans(),
    ),
    train_steps(),
    train_steps(),
    infers(),
    st.builds(
        lambda run_id, session, failure: ("Finish", pb.FinishRequest(run_id=run_id, session=session, failure=failure)),
        run_ids,
        texts,
        texts,
    ),
    st.builds(lambda method, raw: (method, raw), st.sampled_from(sorted(METHODS)), st.binary(max_size=512)),
)
HELLO_FIELDS = (
    "protocol_version",
    "run_id",
    "num_classes",
    "batch_size",
    "config_digest",
    "cut_shape",
    "resume_from",
    "steps_per_epoch",
    "from_start",
)


def _call(channel, method: str, message) -> tuple[grpc.StatusCode, str]:
    request_type, reply_type = METHODS[method]
    raw = message if isinstance(message, bytes) else message.SerializeToString()
    call = channel.unary_unary(
        f"/splitleak.v1.LabelParty/{method}",
        request_serializer=lambda b: b,
        response_deserializer=reply_type.FromString,
    )
    try:
        call(raw, timeout=30)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as err:
        return err.code(), err.details() or ""


# Per target. `make test` sends 1,000; `make reliability` (SPLITLEAK_FULL_RELIABILITY=1) sends 5,000.
EXAMPLES = 5000 if os.environ.get("SPLITLEAK_FULL_RELIABILITY") == "1" else 1000


def test_malformed_messages_are_refused_cleanly_and_the_server_lives_on(target, figures):
    name, channel, pid, feature, link, statuses = target
    for _ in range(200):  # warm up (imports, allocator) before the memory baseline
        _call(channel, "Finish", pb.FinishRequest(run_id="t", session="wrong"))
    baseline = _rss_mb(pid)
    unexpected: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(messages)
    def fuzz(item):
        method, message = item
        code, details = _call(channel, method, message)
        statuses[code.name if code != grpc.StatusCode.OK else f"OK {method}"] += 1
        undecodable = isinstance(message, bytes) and code == grpc.StatusCode.INTERNAL and "deserializ" in details
        if code not in REFUSALS | {grpc.StatusCode.OK} and not undecodable:
            unexpected.append(f"{method}: {code.name}: {details[:300]}")

    fuzz()
    grown = _rss_mb(pid) - baseline
    print(f"statuses: {dict(statuses)}; memory grew {grown:.1f} MB")
    assert not unexpected, "\n".join(unexpected[:20])
    assert sum(statuses.values()) >= EXAMPLES
    assert grown < 64, f"the server grew by {grown:.1f} MB"
    # Still serving: a valid inference request of the real feature party is answered.
    ids = feature.split.test_ids[:8]
    code, details = _call(
        channel,
        "Infer",
        pb.InferRequest(
            run_id="t",
            request_id="after-fuzz",
            sample_ids=list(map(int, ids)),
            smashed=tensor_to_proto(torch.rand(8, CUT)),
        ),
    )
    assert code == grpc.StatusCode.OK, details
    # And training goes on from where the label party stands, with a finite loss: no accepted message
    # (3e38s included) poisoned the top model.
    hello = feature.hello(link)
    ids = TRAIN_IDS[:32]
    reply = pb.TrainStepReply.FromString(
        channel.unary_unary("/splitleak.v1.LabelParty/TrainStep")(
            pb.TrainStepRequest(
                run_id="t",
                epoch=hello.next_epoch,
                step=hello.next_step,
                sample_ids=ids,
                smashed=tensor_to_proto(torch.rand(len(ids), CUT)),
            ).SerializeToString(),
            timeout=30,
        )
    )
    assert torch.isfinite(torch.tensor(reply.loss)) and not reply.replayed
    figures.setdefault("fuzz", []).append(
        {
            "target": name,
            "messages": sum(statuses.values()),
            "statuses": dict(statuses.most_common()),
            "rss_growth_mb": round(grown, 1),
            "valid_requests_after": "answered",
        }
    )
