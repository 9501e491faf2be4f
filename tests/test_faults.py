"""A reply lost in the network: the feature party retries, the label party replays, nothing is lost or doubled."""

import threading

import grpc
import torch

from conftest import small_config
from party_feature.link import GrpcLink
from party_feature.party import build_feature_party
from splitleak.transport import bind_server, create_server

SERVICE = "/splitleak.v1.LabelParty/"


class LosesOneReply:
    """A real gRPC hop in front of the label party that forwards every call but drops the reply of one TrainStep."""

    def __init__(self, upstream: str, config, lose_call: int) -> None:
        self.channel = grpc.insecure_channel(upstream)
        self.lose_call = lose_call
        self.train_calls = 0
        self.lock = threading.Lock()
        self.server = create_server(config.transport)
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(self._forwarder(name))
            for name in ("Hello", "TrainStep", "Infer", "Finish")
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("splitleak.v1.LabelParty", handlers),)
        )
        self.port = bind_server(self.server, "127.0.0.1", 0, config.transport)
        self.server.start()

    def _forwarder(self, name):
        upstream = self.channel.unary_unary(SERVICE + name)

        def forward(request: bytes, context):
            reply = upstream(request, timeout=10)
            if name == "TrainStep":
                with self.lock:
                    self.train_calls += 1
                    lose = self.train_calls == self.lose_call
                if lose:  # the label party applied the step; its reply never arrives
                    context.abort(grpc.StatusCode.UNAVAILABLE, "reply lost in transit")
            return reply

        return forward

    def stop(self):
        self.server.stop(0).wait()
        self.channel.close()


def _run(tmp_path, label_server, *, lose_call):
    config = small_config(tmp_path / f"lose{lose_call}", train={"epochs": 2, "batch_size": 64})
    server = label_server(config)
    hop = LosesOneReply(f"127.0.0.1:{server.port}", config, lose_call)
    config = config.model_copy(
        update={
            "feature_party": config.feature_party.model_copy(
                update={"label_party_address": f"127.0.0.1:{hop.port}", "retry_s": 30}
            )
        }
    )
    feature = build_feature_party(config)
    report = feature.run(GrpcLink(config))
    hop.stop()
    return feature, server, report, hop


def test_a_lost_reply_is_retried_and_applied_once(tmp_path, label_server):
    clean_feature, clean_server, clean_report, _ = _run(tmp_path, label_server, lose_call=0)
    feature, server, report, hop = _run(tmp_path, label_server, lose_call=7)
    assert hop.train_calls == report.train_rounds + 1, "exactly one retry went through the hop"
    assert server.party.steps_applied == report.train_rounds == clean_report.train_rounds
    for a, b in zip(feature.bottom.state_dict().values(), clean_feature.bottom.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(server.party.top.state_dict().values(), clean_server.party.top.state_dict().values()):
        assert torch.equal(a, b)
    assert report.finish.test_accuracy == clean_report.finish.test_accuracy
