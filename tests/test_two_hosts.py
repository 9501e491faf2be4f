"""The parties on two hosts: the label party in one network namespace with its
own address, the adversary and the feature party in another."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import small_config
from splitleak.config import dump_config
from splitleak.runner import draw_known_labels

pytestmark = pytest.mark.slow


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@pytest.fixture
def two_hosts():
    """Yields (label_ns, feature_ns, label_address) for two namespaces joined by a veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    tag = f"{os.getpid() % 100000}"
    a, b = f"sl{tag}a", f"sl{tag}b"
    subnet = f"10.231.{os.getpid() % 250}"
    steps = [
        ("netns", "add", a),
        ("netns", "add", b),
        ("link", "add", f"v{tag}a", "type", "veth", "peer", "name", f"v{tag}b"),
        ("link", "set", f"v{tag}a", "netns", a),
        ("link", "set", f"v{tag}b", "netns", b),
        ("-n", a, "addr", "add", f"{subnet}.1/24", "dev", f"v{tag}a"),
        ("-n", b, "addr", "add", f"{subnet}.2/24", "dev", f"v{tag}b"),
        ("-n", a, "link", "set", f"v{tag}a", "up"),
        ("-n", b, "link", "set", f"v{tag}b", "up"),
        ("-n", a, "link", "set", "lo", "up"),
        ("-n", b, "link", "set", "lo", "up"),
    ]
    try:
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot create network namespaces here: ip {' '.join(step)}: {done.stderr.strip()}")
        yield a, b, f"{subnet}.1"
    finally:
        _ip("netns", "del", a)
        _ip("netns", "del", b)


def _in_namespace(namespace: str, module: str, *args: str) -> list[str]:
    """Returns the command that runs `python -m module args` inside a network namespace."""
    return ["ip", "netns", "exec", namespace, sys.executable, "-m", module, *args]


def _wait_ready(path, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())["port"]
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def test_parties_on_two_hosts(tmp_path, two_hosts):
    label_ns, feature_ns, label_ip = two_hosts
    config = small_config(
        tmp_path,
        train={"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
        adversary={"mode": "proxy", "ground_truth": "dataset"},
    )
    run_dir = tmp_path / "run"
    known = run_dir / "known_labels.csv"
    draw_known_labels(config, known)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(dump_config(config))
    common = ["--config", str(config_path)]
    procs = []
    try:
        label = subprocess.Popen(
            _in_namespace(
                label_ns,
                "party_label",
                *common,
                "--ready-file",
                str(tmp_path / "label.json"),
                f"label_party.host={label_ip}",
            )
        )
        procs.append(label)
        label_port = _wait_ready(tmp_path / "label.json", label)
        adversary = subprocess.Popen(
            _in_namespace(
                feature_ns,
                "adversary",
                *common,
                "--ready-file",
                str(tmp_path / "adversary.json"),
                f"adversary.upstream={label_ip}:{label_port}",
                f"adversary.known_labels={known}",
            )
        )
        procs.append(adversary)
        proxy_port = _wait_ready(tmp_path / "adversary.json", adversary)
        feature = subprocess.run(
            _in_namespace(
                feature_ns,
                "party_feature",
                *common,
                f"feature_party.label_party_address=127.0.0.1:{proxy_port}",
                f"adversary.known_labels={known}",
            ),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert feature.returncode == 0, feature.stderr[-2000:]
        assert label.wait(timeout=60) == 0 and adversary.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["task"]["test_accuracy"] > 0.5  # chance is 0.1
    assert summary["adversary"]["rounds_observed"] == summary["timing"]["rounds"] + summary["timing"]["infer_rounds"]
