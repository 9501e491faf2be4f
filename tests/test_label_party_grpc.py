"""The label party over real gRPC (server on port 0): statuses for bad input, idempotency, health, reflection, auth."""

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import small_config
from party_feature.link import GrpcLink
from party_feature.party import build_feature_party
from splitleak import PROTOCOL_VERSION
from splitleak.codec import tensor_to_proto
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.v1 import splitleak_pb2_grpc as pb_grpc


@pytest.fixture
def session(tmp_path, label_server):
    config = small_config(tmp_path)
    server = label_server(config)
    config = config.model_copy(
        update={
            "feature_party": config.feature_party.model_copy(update={"label_party_address": f"127.0.0.1:{server.port}"})
        }
    )
    feature = build_feature_party(config)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.LabelPartyStub(channel)
    feature.hello(GrpcLink(config))
    yield config, server, feature, stub
    channel.close()


def _step(feature, epoch=0, step=0, *, ids=None, smashed=None, run_id="t"):
    if ids is None:
        ids = feature.split.train_ids[:4]
    if smashed is None:
        smashed = tensor_to_proto(torch.rand(len(ids), feature.config.model.cut_dim))
    return pb.TrainStepRequest(run_id=run_id, epoch=epoch, step=step, sample_ids=list(map(int, ids)), smashed=smashed)


def _status(stub, request):
    with pytest.raises(grpc.RpcError) as err:
        stub.TrainStep(request, timeout=10)
    return err.value.code(), err.value.details()


def test_bad_inputs_get_clear_statuses_and_the_server_keeps_serving(session):
    config, server, feature, stub = session
    good = torch.rand(4, 16)
    cases = [
        (
            _step(feature, smashed=tensor_to_proto(torch.rand(4, 15))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "smashed tensor has samples of shape [15], the run's cut shape is [16]",
        ),
        (
            _step(feature, smashed=pb.Tensor(dtype="float32", shape=[4, 16], data=b"\x00" * 10)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "needs 256 bytes, got 10",
        ),
        (
            _step(feature, smashed=tensor_to_proto(torch.full((4, 16), float("nan")))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "NaN",
        ),
        (
            _step(feature, smashed=pb.Tensor(dtype="complex64", shape=[4, 16], data=b"")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "dtype 'complex64'",
        ),
        (_step(feature, run_id="other"), grpc.StatusCode.FAILED_PRECONDITION, "run id 'other'"),
        (_step(feature, epoch=0, step=5), grpc.StatusCode.FAILED_PRECONDITION, "ahead of the next expected step"),
        (_step(feature, ids=feature.split.test_ids[:4]), grpc.StatusCode.INVALID_ARGUMENT, "not in the training split"),
        (_step(feature, ids=[10**9, 1, 2, 3]), grpc.StatusCode.INVALID_ARGUMENT, "outside the dataset"),
    ]
    for request, code, text in cases:
        got_code, details = _status(stub, request)
        assert got_code == code, details
        assert text in details
    # Still serving, and none of the refused requests moved the step counter.
    reply = stub.TrainStep(_step(feature, smashed=tensor_to_proto(good)), timeout=10)
    assert list(reply.cut_grad.shape) == [4, 16] and not reply.replayed


def test_replayed_step_returns_the_recorded_reply_and_is_applied_once(session):
    config, server, feature, stub = session
    request = _step(feature)
    first = stub.TrainStep(request, timeout=10)
    weights = [p.detach().clone() for p in server.party.top.parameters()]
    again = stub.TrainStep(request, timeout=10)
    assert again.replayed and again.cut_grad == first.cut_grad and again.loss == first.loss
    for before, after in zip(weights, server.party.top.parameters()):
        assert torch.equal(before, after), "a replay must not train the top model again"
    other_ids = _step(feature, ids=feature.split.train_ids[4:8])
    code, details = _status(stub, other_ids)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "other sample ids" in details
    stub.TrainStep(_step(feature, epoch=0, step=1), timeout=10)
    stub.TrainStep(_step(feature, epoch=1, step=0), timeout=10)


def test_hello_mismatch_is_failed_precondition(session):
    config, server, feature, stub = session
    with pytest.raises(grpc.RpcError) as err:
        stub.Hello(
            pb.HelloRequest(
                protocol_version=PROTOCOL_VERSION,
                run_id="t",
                cut_shape=[99],
                num_classes=10,
                batch_size=32,
                config_digest="x",
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cut shape [99]" in err.value.details() and "config digest" in err.value.details()


def test_a_peer_of_protocol_version_1_is_refused_clearly(session):
    """Version 1 sent a single cut width; a version-2 label party names the version it speaks."""
    config, server, feature, stub = session
    with pytest.raises(grpc.RpcError) as err:
        stub.Hello(pb.HelloRequest(protocol_version=1, run_id="t", num_classes=10, batch_size=32), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"protocol version 1 is not supported; this label party speaks {PROTOCOL_VERSION}" in err.value.details()


def test_infer_acks_by_default_and_counts_accuracy_once(session):
    config, server, feature, stub = session
    ids = feature.split.test_ids[:8]
    request = pb.InferRequest(
        run_id="t", request_id="r1", sample_ids=list(map(int, ids)), smashed=tensor_to_proto(torch.rand(8, 16))
    )
    reply = stub.Infer(request, timeout=10)
    assert reply.count == 8 and list(reply.predictions) == []
    stub.Infer(request, timeout=10)
    finish = stub.Finish(pb.FinishRequest(run_id="t"), timeout=10)
    assert finish.test_samples == 8 and 0 <= finish.test_accuracy <= 1
    assert not finish.HasField("epsilon")


def test_health_and_reflection_are_standard(session):
    config, server, feature, stub = session
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="splitleak.v1.LabelParty"), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(
        reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    )
    names = {s.name for s in replies[0].list_services_response.service}
    assert "splitleak.v1.LabelParty" in names and "grpc.health.v1.Health" in names
    channel.close()


def test_bearer_token_is_required_when_configured(tmp_path, label_server):
    config = small_config(tmp_path, transport={"token": "s3cret"})
    server = label_server(config)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.LabelPartyStub(channel)
    hello = pb.HelloRequest(protocol_version=PROTOCOL_VERSION, run_id="t")
    with pytest.raises(grpc.RpcError) as err:
        stub.Hello(hello, timeout=10, metadata=(("authorization", "Bearer wrong"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The right token passes authentication (and then fails the handshake checks on its merits).
    with pytest.raises(grpc.RpcError) as err:
        stub.Hello(hello, timeout=10, metadata=(("authorization", "Bearer s3cret"),))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_retry_helper_retries_unavailable_only():
    from splitleak.transport import call_with_retry

    class Err(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

        def details(self):
            return "x"

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise Err(grpc.StatusCode.UNAVAILABLE)
        return "ok"

    assert call_with_retry(flaky, retries=5, what="t", base_delay_s=0.001) == "ok" and len(calls) == 3
    calls.clear()

    def refused():
        calls.append(1)
        raise Err(grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(grpc.RpcError):
        call_with_retry(refused, retries=5, what="t", base_delay_s=0.001)
    assert len(calls) == 1


def test_infer_returns_predictions_when_the_policy_allows(tmp_path, label_server):
    config = small_config(tmp_path, label_party={"return_predictions": True})
    server = label_server(config)
    config = config.model_copy(
        update={
            "feature_party": config.feature_party.model_copy(update={"label_party_address": f"127.0.0.1:{server.port}"})
        }
    )
    feature = build_feature_party(config)
    link = GrpcLink(config)
    assert feature.hello(link).returns_predictions
    ids = feature.split.test_ids[:8]
    reply = link.infer(
        pb.InferRequest(
            run_id="t", request_id="r", sample_ids=list(map(int, ids)), smashed=tensor_to_proto(feature.embed(ids))
        )
    )
    assert reply.count == 8 and len(reply.predictions) == 8 and set(reply.predictions) <= set(range(10))
    link.close()
