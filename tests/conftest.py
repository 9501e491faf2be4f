"""Shared fixtures: small configs on bundled data, real servers on port 0."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from splitleak.config import RunConfig, parse_config

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"

needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"the MNIST test set is not in {MNIST_DIR} (it ships in the project's shared/ folder)",
)


def small_config(tmp_path: Path, **sections) -> RunConfig:
    """Returns a fast digits config writing under tmp_path; keyword arguments replace whole sections' keys."""
    tree = {
        "run": {"id": "t", "dir": str(tmp_path / "run"), "seed": 0, "log_level": "WARNING"},
        "data": {"name": "digits"},
        "model": {"bottom_hidden": [32], "cut_dim": 16},
        "train": {"epochs": 1, "batch_size": 32},
        "label_party": {"port": 0},
        "feature_party": {"progress": False, "deadline_s": 20, "retry_s": 5},
        "adversary": {"mode": "off", "port": 0},
    }
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return parse_config(tree)


@pytest.fixture
def label_server():
    """Starts real label-party servers on port 0; stops them after the test."""
    from party_label.server import serve

    running = []

    def start(config):
        server = serve(config)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop(grace_s=0)


@pytest.fixture(scope="session")
def figures():
    """Figures the reliability tests measure, by test; written as JSON to $SPLITLEAK_FIGURES when it is set
    (`make reliability` renders them into docs/reliability.md). A test records its figures only once its
    assertions have passed."""
    found: dict[str, list] = {}
    yield found
    path = os.environ.get("SPLITLEAK_FIGURES")
    if path:
        Path(path).write_text(json.dumps(found, indent=2))
