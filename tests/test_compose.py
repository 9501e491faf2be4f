"""docker-compose.yml is valid, and its services' own commands run the demo as local processes."""

import json
import os
import re
import shlex
import socket
import sys
import time
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed (.ci/run installs it)"
)
def test_docker_compose_validates_offline():
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local(command, ports: dict[str, int], runs: Path) -> list[str]:
    """Returns a compose command as a local command line: the image's python and splitleak are this
    interpreter, /runs a temporary folder, service names and container ports free loopback ports."""
    text = command if isinstance(command, str) else shlex.join(command)
    text = text.replace("0.0.0.0", "127.0.0.1").replace("/runs", str(runs))
    for name, port in (("label-party:50051", ports["label"]), ("adversary:50052", ports["adversary"])):
        text = text.replace(name, f"127.0.0.1:{port}")
    text = text.replace("50051", str(ports["label"])).replace("50052", str(ports["adversary"]))
    text = text.replace("localhost:", "127.0.0.1:")
    text = re.sub(r"(?<![\w/.-])python(?= )", shlex.quote(sys.executable), text)
    text = re.sub(r"(?<![\w/.-])splitleak(?= )", shlex.quote(sys.executable) + " -m splitleak.cli", text)
    return shlex.split(text)


@pytest.mark.slow
def test_the_compose_services_run_as_local_processes(tmp_path):
    """The services' own command lines (and the label party's health check) run the demo: three
    processes, the feature party through the adversary, results under /runs/compose."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {"label-party", "adversary", "feature-party"}
    ports = {"label": _free_port(), "adversary": _free_port()}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shorter = ["train.epochs=1"]

    def start(name):
        argv = _local(services[name]["command"], ports, tmp_path)
        if argv[0] == "sh":
            argv[-1] += " " + " ".join(shorter)
        else:
            argv += shorter
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    label = start("label-party")
    health = _local(services["label-party"]["healthcheck"]["test"][1:], ports, tmp_path)
    adversary = None
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(health, cwd=REPO, env=env, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and label.poll() is None, label.stdout.read()
            time.sleep(0.5)
        adversary = start("adversary")
        while not (tmp_path / "compose" / "known_labels.csv").exists():
            assert adversary.poll() is None, adversary.stdout.read()
            time.sleep(0.2)
        time.sleep(2)
        feature = start("feature-party")
        out, _ = feature.communicate(timeout=600)
        assert feature.returncode == 0, out[-3000:]
        for process in (adversary, label):
            process.wait(timeout=60)
            assert process.returncode == 0, process.stdout.read()[-3000:]
    finally:
        for process in (label, adversary):
            if process is not None and process.poll() is None:
                process.kill()
    summary = json.loads((tmp_path / "compose" / "summary.json").read_text())
    assert summary["adversary"]["rounds_observed"] > 0 and summary["task"]["test_accuracy"] > 0.5
