"""The adversary tap in both deployments (proxy, interceptor) over real gRPC: logs and captures."""

import json
import time

import numpy as np
import pytest
import torch

from adversary.interceptor import TapInterceptor
from adversary.proxy import serve_proxy
from adversary.tap import build_tap
from conftest import small_config
from party_feature.link import GrpcLink
from party_feature.party import build_feature_party
from splitleak.codec import tensor_from_proto
from splitleak.runlog import read_jsonl


class RecordingLink:
    """Wraps a link and keeps every gradient the feature party received."""

    def __init__(self, link):
        self.link = link
        self.received = {}

    def __getattr__(self, name):
        return getattr(self.link, name)

    def train_step(self, request):
        reply = self.link.train_step(request)
        grad = tensor_from_proto(reply.cut_grad)
        for row, sid in enumerate(request.sample_ids):
            self.received[(request.epoch, sid)] = grad[row]
        return reply


@pytest.mark.parametrize("mode", ["proxy", "interceptor"])
def test_every_sample_is_captured_once_per_epoch_with_the_gradient_sent(tmp_path, label_server, mode):
    config = small_config(tmp_path, train={"epochs": 2, "batch_size": 64}, adversary={"mode": mode, "capture": True})
    server = label_server(config)
    address = f"127.0.0.1:{server.port}"
    config = config.model_copy(update={"adversary": config.adversary.model_copy(update={"upstream": address})})
    tap = build_tap(config)
    proxy = None
    if mode == "proxy":
        proxy = serve_proxy(config, tap)
        address = f"127.0.0.1:{proxy.port}"
    config = config.model_copy(
        update={"feature_party": config.feature_party.model_copy(update={"label_party_address": address})}
    )
    feature = build_feature_party(config)
    link = RecordingLink(GrpcLink(config, interceptors=[TapInterceptor(tap)] if mode == "interceptor" else ()))
    report = feature.run(link)
    link.close()
    if proxy:
        proxy.stop(grace_s=0)
    else:
        tap.close()

    run_dir = tmp_path / "run"
    train_ids = set(feature.split.train_ids.tolist())
    for epoch in range(2):
        with np.load(run_dir / "tensors" / f"train-epoch-{epoch:04d}.npz") as f:
            ids, grad, smashed = f["ids"], f["grad"], f["smashed"]
        assert sorted(ids.tolist()) == sorted(train_ids), "each training sample exactly once per epoch"
        assert smashed.shape == (len(ids), 16)
        for row, sid in enumerate(ids.tolist()):
            assert torch.equal(torch.from_numpy(grad[row]), link.received[(epoch, sid)])
    with np.load(run_dir / "tensors" / "infer.npz") as f:
        assert sorted(f["ids"].tolist()) == sorted(feature.split.test_ids.tolist())

    records = list(read_jsonl(run_dir / "attack_log.jsonl"))
    rounds = [r for r in records if r["type"] == "round" and r["phase"] == "train"]
    assert len(rounds) == report.train_rounds
    for r in rounds:
        assert {"epoch", "step", "samples", "request_bytes", "reply_bytes", "latency_ms"} <= r.keys()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["task"]["epochs"] == 2
    assert summary["timing"]["rounds"] == report.train_rounds
    assert abs(summary["task"]["test_accuracy"] - report.finish.test_accuracy) < 1e-12


def test_a_worker_that_falls_behind_is_logged_and_drops_nothing(tmp_path, monkeypatch):
    from adversary.tap import Tap
    from party_feature.link import InProcLink
    from party_label.server import build_label_party
    from party_label.service import LabelService

    config = small_config(tmp_path, adversary={"mode": "interceptor", "queue_size": 1})
    original = Tap._handle

    def slow_handle(self, event):
        time.sleep(0.02)
        original(self, event)

    monkeypatch.setattr(Tap, "_handle", slow_handle)
    tap = build_tap(config)
    feature = build_feature_party(config)
    report = feature.run(InProcLink(LabelService(build_label_party(config)), tap=tap))
    tap.close()
    records = list(read_jsonl(tmp_path / "run" / "attack_log.jsonl"))
    lags = [r for r in records if r["type"] == "lag"]
    # A lag is logged while it happens (queued, before the exchange waits) and when it ends (how long).
    assert [r for r in lags if "queued" in r] and all(r["waited_ms"] > 0 for r in lags if "waited_ms" in r)
    rounds = [r for r in records if r["type"] == "round"]
    assert len(rounds) == report.train_rounds + report.infer_rounds
