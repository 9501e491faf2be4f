"""For a fixed seed, N steps over gRPC give the same weights as the same N steps in one process."""

import pytest
import torch
import torch.nn.functional as F

from conftest import small_config
from party_feature.link import GrpcLink, InProcLink
from party_feature.party import build_feature_party
from party_label.server import build_label_party
from party_label.service import LabelService
from splitleak.data import load_dataset


def _reference_weights(config, steps: int):
    """Both halves composed in one process, trained end to end with plain autograd."""
    feature = build_feature_party(config)
    label = build_label_party(config)
    labels = torch.as_tensor(load_dataset(config.data, config.run.seed).labels())
    bottom, top = feature.bottom, label.top
    for _, (ids, x) in zip(range(steps), feature.batches(feature.split.train_ids, shuffle_seed=config.run.seed * 1000)):
        feature.optimizer.zero_grad()
        label.optimizer.zero_grad()
        loss = F.cross_entropy(top(bottom(x)), labels[torch.as_tensor(ids)])
        loss.backward()
        feature.optimizer.step()
        label.optimizer.step()
    return bottom.state_dict(), top.state_dict()


def _split_weights(config, link_factory, steps: int):
    feature = build_feature_party(config)
    link, label = link_factory(config)
    feature.hello(link)
    steps_done = 0
    original = feature.batches

    def limited(ids, *, shuffle_seed):
        nonlocal steps_done
        for batch in original(ids, shuffle_seed=shuffle_seed):
            if steps_done == steps:
                return
            steps_done += 1
            yield batch

    feature.batches = limited
    feature.train_epoch(link, 0)
    link.close()
    return feature.bottom.state_dict(), label.top.state_dict()


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


CUTS = {
    "mlp bottom + linear top": {},
    "resnet18 cut after layer1 (4-D smashed data)": {
        "model": {"arch": "resnet18", "cut": "layer1", "options": {"width": 0.125}}
    },
}


@pytest.mark.parametrize("cut", CUTS)
def test_grpc_training_is_bit_identical_to_one_process(tmp_path, label_server, cut):
    config = small_config(tmp_path, train={"epochs": 1, "batch_size": 16}, **CUTS[cut])
    steps = 12
    reference = _reference_weights(config, steps)

    def grpc_link(cfg):
        server = label_server(cfg)
        cfg = cfg.model_copy(
            update={
                "feature_party": cfg.feature_party.model_copy(
                    update={"label_party_address": f"127.0.0.1:{server.port}"}
                )
            }
        )
        return GrpcLink(cfg), server.party

    def inproc_link(cfg):
        party = build_label_party(cfg)
        return InProcLink(LabelService(party)), party

    over_grpc = _split_weights(config, grpc_link, steps)
    in_process = _split_weights(config, inproc_link, steps)
    for got in (over_grpc, in_process):
        _assert_identical(got[0], reference[0])
        _assert_identical(got[1], reference[1])
    # and training did move the weights
    fresh = build_feature_party(config).bottom.state_dict()
    assert any(not torch.equal(fresh[k], reference[0][k]) for k in fresh)
    assert build_feature_party(config).cut_shape == ((16,) if not CUTS[cut] else (8, 8, 8))
