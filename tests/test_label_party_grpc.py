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
    finish = stub.Finish(pb.FinishRequest(run_id="t", session=feature.session), timeout=10)
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

    assert call_with_retry(flaky, retry_s=5, what="t", base_delay_s=0.001) == "ok" and len(calls) == 3
    calls.clear()

    def refused():
        calls.append(1)
        raise Err(grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(grpc.RpcError):
        call_with_retry(refused, retry_s=5, what="t", base_delay_s=0.001)
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


def _connected(tmp_path, label_server, **sections):
    """A label-party server and a feature party that said Hello to it."""
    config = small_config(tmp_path, **sections)
    server = label_server(config)
    config = config.model_copy(
        update={
            "feature_party": config.feature_party.model_copy(update={"label_party_address": f"127.0.0.1:{server.port}"})
        }
    )
    feature = build_feature_party(config)
    feature.hello(GrpcLink(config))
    return server, feature, pb_grpc.LabelPartyStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


def _top_weights(server):
    return [p.detach().clone() for p in server.party.top.state_dict().values()]


@pytest.mark.parametrize("limit", [1e6, 1e39])
def test_a_step_that_would_poison_the_top_model_is_refused_and_changes_nothing(tmp_path, label_server, limit, figures):
    """3e38 in every entry: refused up front by max_input_abs (1e6), or, with the limit above it, refused after
    the step because its loss is not finite; either way the top model is as before and training goes on."""
    server, feature, stub = _connected(tmp_path, label_server, label_party={"port": 0, "max_input_abs": limit})
    stub.TrainStep(_step(feature), timeout=10)
    before = _top_weights(server)
    code, details = _status(stub, _step(feature, step=1, smashed=tensor_to_proto(torch.full((4, 16), 3e38))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("max_input_abs" in details) if limit == 1e6 else ("not finite; the step was refused" in details)
    assert all(torch.equal(a, b) for a, b in zip(before, _top_weights(server)))
    reply = stub.TrainStep(_step(feature, step=1), timeout=10)
    assert torch.isfinite(torch.tensor(reply.loss)) and all(torch.isfinite(p).all() for p in _top_weights(server))
    figures.setdefault("poison", []).append(
        {"max_input_abs": limit, "status": code.name, "details": details, "top_model_unchanged": True}
    )


def test_a_replay_matches_the_whole_request_not_just_its_step_and_ids(session):
    """A second sender with the same step and ids but other tensors must not receive the first's gradient."""
    config, server, feature, stub = session
    stub.TrainStep(_step(feature, smashed=tensor_to_proto(torch.zeros(4, 16))), timeout=10)
    code, details = _status(stub, _step(feature, smashed=tensor_to_proto(torch.ones(4, 16))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "other sample ids or smashed data" in details


def test_infer_replies_and_request_ids_are_bounded(tmp_path, label_server):
    server, feature, stub = _connected(tmp_path, label_server, label_party={"port": 0, "infer_window": 4})
    ids = feature.split.test_ids
    for i in range(12):
        batch = list(map(int, ids[i * 2 : i * 2 + 2]))
        stub.Infer(
            pb.InferRequest(
                run_id="t", request_id=f"r{i}", sample_ids=batch, smashed=tensor_to_proto(torch.rand(2, 16))
            ),
            timeout=10,
        )
    assert len(server.party._infer_replies) == 4  # the window, not every request ever answered
    with pytest.raises(grpc.RpcError) as err:
        stub.Infer(
            pb.InferRequest(
                run_id="t", request_id="x" * 129, sample_ids=[int(ids[0])], smashed=tensor_to_proto(torch.rand(1, 16))
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "longer than 128" in err.value.details()


def test_finish_is_no_label_oracle(tmp_path, label_server, figures):
    """A second Finish, a Finish from another client, and a test sample's Infer repeated under new request
    ids leave the published accuracy as a run without them publishes it."""
    plain_server, plain_feature, plain = _connected(tmp_path / "plain", label_server)
    server, feature, stub = _connected(tmp_path / "probed", label_server)
    ids = list(map(int, feature.split.test_ids[:16]))
    smashed = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    for s in (plain, stub):
        s.Infer(
            pb.InferRequest(run_id="t", request_id="r", sample_ids=ids, smashed=tensor_to_proto(smashed)), timeout=10
        )
    # The prober re-asks about one sample with other smashed data, under fresh request ids.
    for i in range(20):
        stub.Infer(
            pb.InferRequest(
                run_id="t", request_id=f"probe{i}", sample_ids=ids[:1], smashed=tensor_to_proto(torch.randn(1, 16) * 5)
            ),
            timeout=10,
        )
    # Another client (no session secret, or a guessed one) cannot end the run.
    other = pb_grpc.LabelPartyStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    for session in ("", "guess"):
        with pytest.raises(grpc.RpcError) as err:
            other.Finish(pb.FinishRequest(run_id="t", session=session), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not server.party.finished.is_set()
    expected = plain.Finish(pb.FinishRequest(run_id="t", session=plain_feature.session), timeout=10)
    first = stub.Finish(pb.FinishRequest(run_id="t", session=feature.session), timeout=10)
    assert (
        (first.test_accuracy, first.test_samples)
        == (expected.test_accuracy, expected.test_samples)
        == (
            expected.test_accuracy,
            16,
        )
    )
    # Once finished: no second Finish, and no more Infer to move anything.
    for call, request in (
        (stub.Finish, pb.FinishRequest(run_id="t", session=feature.session)),
        (
            stub.Infer,
            pb.InferRequest(
                run_id="t", request_id="late", sample_ids=ids[:1], smashed=tensor_to_proto(torch.rand(1, 16))
            ),
        ),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "has finished" in err.value.details()
    figures["finish_oracle"] = {
        "probes": 20,
        "finish_from_other_clients": "PERMISSION_DENIED",
        "second_finish": "FAILED_PRECONDITION",
        "published_accuracy": first.test_accuracy,
        "accuracy_without_probes": expected.test_accuracy,
        "test_samples": first.test_samples,
    }
