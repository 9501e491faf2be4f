"""Any torch model split at a named child: built-ins, a user's file, cuts, clear errors, devices."""

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO, small_config
from splitleak.config import ConfigError
from splitleak.data import load_dataset
from splitleak.models import ModelError, build_split, cut_shape, list_cuts
from splitleak.runner import run_in_process

USER_MODEL = textwrap.dedent(
    """
    from collections import OrderedDict

    from torch import nn


    def build(input_shape, num_classes, hidden=24):
        width = 1
        for d in input_shape:
            width *= d
        return nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("embed", nn.Sequential(nn.Linear(width, hidden), nn.ReLU())),
            ("middle", nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())),
            ("head", nn.Linear(hidden, num_classes)),
        ]))


    class Shuffled(nn.Module):
        # Its forward does not run its children in order: the cut would not be the model.
        def __init__(self, input_shape, num_classes):
            super().__init__()
            self.first = nn.Flatten()
            self.last = nn.Linear(input_shape[-1] * input_shape[-2], num_classes)

        def forward(self, x):
            return self.last(self.first(x)) * 2
    """
)


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _shapes(config):
    dataset = load_dataset(config.data, 0)
    return dataset.input_shape, dataset.num_classes


def test_a_user_model_is_cut_at_its_named_child(tmp_path, user_model):
    config = small_config(tmp_path, model={"arch": "my_models:build", "cut": "embed", "options": {"hidden": 20}})
    input_shape, classes = _shapes(config)
    bottom, top = build_split(config.model, input_shape=input_shape, num_classes=classes, seed=3)
    assert [n for n, _ in bottom.named_children()] == ["flatten", "embed"]
    assert [n for n, _ in top.named_children()] == ["middle", "head"]
    assert cut_shape(bottom, input_shape) == (20,)
    # Both parties build the whole model from the same seed: the halves are the same on every host.
    again, _ = build_split(config.model, input_shape=input_shape, num_classes=classes, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(bottom.state_dict().values(), again.state_dict().values()))


def test_model_errors_say_what_to_change(tmp_path, user_model):
    def split(**model):
        config = small_config(tmp_path, model=model)
        input_shape, classes = _shapes(config)
        return build_split(config.model, input_shape=input_shape, num_classes=classes, seed=0)

    with pytest.raises(ModelError, match="cuts: flatten, embed, middle"):
        split(arch="my_models:build", cut="head")
    with pytest.raises(ModelError, match="not its top-level children run in order"):
        split(arch="my_models:Shuffled", cut="first")
    with pytest.raises(ModelError, match="cannot import no_such_module"):
        split(arch="no_such_module:build", cut="x")
    with pytest.raises(ModelError, match="has no callable 'nope'"):
        split(arch="my_models:nope", cut="x")
    with pytest.raises(ModelError, match=r"could not be called as callable\(input_shape=..., num_classes=..."):
        split(arch="my_models:build", cut="embed", options={"depth": 3})
    with pytest.raises(ModelError, match="simplenet needs images .* of at least 32x32"):
        split(arch="simplenet", cut="block3")
    with pytest.raises(ConfigError, match="model.cut must name the child"):
        small_config(tmp_path, model={"arch": "resnet18"})
    with pytest.raises(ConfigError, match="unknown model.arch 'resnet50'"):
        small_config(tmp_path, model={"arch": "resnet50", "cut": "layer1"})


def test_cuts_lists_resnet18_blocks_with_their_shapes(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitleak.cli",
            "cuts",
            "--json",
            "data.name=cifar10",
            f"data.path={tmp_path}",
            "model.arch=resnet18",
            "model.cut=layer1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = {row["cut"]: row for row in json.loads(done.stdout)}
    assert rows["layer1"]["shape"] == [64, 32, 32] and rows["layer1"]["size"] == 65536
    assert rows["layer2"]["shape"] == [128, 16, 16]
    assert rows["layer3"]["shape"] == [256, 8, 8]
    assert rows["layer4"]["shape"] == [512, 4, 4]
    assert "fc" not in rows, "nothing would be left above a cut after the last child"
    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitleak.cli",
            "cuts",
            "data.name=cifar10",
            "model.arch=resnet18",
            "model.cut=layer2",
            f"data.path={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "layer2 (configured)" in table.stdout and "128x16x16" in table.stdout


def test_simplenet_is_the_13_convolution_network():
    config = small_config(
        REPO, data={"name": "cifar10", "path": str(REPO)}, model={"arch": "simplenet", "cut": "block13"}
    )
    rows = list_cuts(config.model, input_shape=(3, 32, 32), num_classes=10)
    blocks = [r for r in rows if r["cut"].startswith("block")]
    assert len(blocks) == 13
    full, _ = build_split(config.model, input_shape=(3, 32, 32), num_classes=10, seed=0)
    convs = [m for m in full.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 128, 128, 128, 256, 256, 256, 512, 2048, 256, 256]
    assert rows[-1]["shape"] == [256]


def _cifar_batches(root, n=160, seed=0):
    """CIFAR-10 python batches, made here: each class a different mean colour, so the task is learnable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    colour = rng.integers(40, 215, size=(10, 3))
    pixels = colour[labels][:, :, None] + rng.normal(0, 30, size=(n, 3, 1024))
    data = np.clip(pixels, 0, 255).astype(np.uint8).reshape(n, 3072)
    root.mkdir(parents=True, exist_ok=True)
    for name, part in (("data_batch_1", slice(0, n - 40)), ("test_batch", slice(n - 40, n))):
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data[part], b"labels": labels[part].tolist()}, f)


CONV_CUTS = {
    "resnet18-layer1": ["model.arch=resnet18", "model.cut=layer1", "model.options={width: 0.125}"],
    "simplenet-block7": ["model.arch=simplenet", "model.cut=block7", "model.options={width: 0.125, dropout: 0.0}"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", CONV_CUTS)
def test_conv_cuts_run_end_to_end_with_4d_smashed_data_and_the_same_numbers_in_process(tmp_path, name):
    _cifar_batches(tmp_path / "cifar")
    common = [
        "data.name=cifar10",
        f"data.path={tmp_path / 'cifar'}",
        "train.epochs=2",
        "train.batch_size=20",
        "train.optimizer=adam",
        "train.lr=0.003",
        "adversary.capture=true",
        *CONV_CUTS[name],
    ]
    demo = subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "demo", "--run-dir", str(tmp_path / "processes"), *common],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    processes = json.loads((tmp_path / "processes" / "summary.json").read_text())
    from splitleak.config import load_config

    inproc = run_in_process(
        load_config(None, [*common, f"run.dir={tmp_path / 'inproc'}", "feature_party.progress=false"])
    )
    assert processes["task"]["test_accuracy"] == inproc["task"]["test_accuracy"]
    assert processes["leakage"] == inproc["leakage"]
    live = {(r["attack"], r["data"], r["phase"], r["epoch"]): r["accuracy"] for r in processes["attacks"]}
    assert live == {(r["attack"], r["data"], r["phase"], r["epoch"]): r["accuracy"] for r in inproc["attacks"]}
    hello = json.loads((tmp_path / "processes" / "attack_log.jsonl").read_text().splitlines()[0])
    assert len(hello["cut_shape"]) == 3, "the cut is a feature map: (channels, height, width)"
    with np.load(tmp_path / "processes" / "tensors" / "train-epoch-0000.npz") as capture:
        assert capture["smashed"].shape[1:] == tuple(hello["cut_shape"]), "capture stores what crossed the wire"
        assert capture["grad"].shape == capture["smashed"].shape


@pytest.mark.slow
def test_a_model_from_a_users_file_trains_over_grpc_in_three_processes(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "my_models.py").write_text(USER_MODEL)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "models")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitleak.cli",
            "demo",
            "--run-dir",
            str(tmp_path / "run"),
            "--epochs",
            "2",
            "model.arch=my_models:build",
            "model.cut=middle",
            "model.options={hidden: 48}",
            "train.optimizer=adam",
            "train.lr=0.003",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(set(summary["processes"].values())) == 3
    assert summary["cut_shape"] == [48]
    assert summary["task"]["test_accuracy"] > 0.6
    assert summary["leakage"]["train"]["accuracy"] > 0.9


@pytest.mark.parametrize("module", ["party_label", "party_feature", "adversary"])
def test_a_cuda_device_on_a_host_without_one_fails_at_start_with_a_clear_message(tmp_path, module):
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    key = {"party_label": "label_party", "party_feature": "feature_party", "adversary": "adversary"}[module]
    done = subprocess.run(
        [sys.executable, "-m", module, f"{key}.device=cuda:0", f"run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"{key}.device is 'cuda:0' but this host has no CUDA device" in done.stderr
    demo = subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "demo", "--run-dir", str(tmp_path / "demo"), f"{key}.device=cuda:0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 2 and "no CUDA device" in demo.stderr
    assert not (tmp_path / "demo" / "logs").exists(), "no process was started"


def test_dp_sgd_on_a_top_with_batchnorm_is_refused_clearly(tmp_path):
    config = small_config(
        tmp_path,
        data={"name": "digits"},
        model={"arch": "resnet18", "cut": "layer3", "options": {"width": 0.125}},
        label_party={"defense": {"name": "dp_sgd", "epsilon": 1.0}},
        adversary={"mode": "interceptor"},
    )
    with pytest.raises(ConfigError, match="dp_sgd cannot compute per-sample gradients of this top model"):
        run_in_process(config)
