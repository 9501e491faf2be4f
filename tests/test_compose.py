"""docker-compose.yml is valid, and every service's command loads its config."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from splitleak.config import load_config

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed (.ci/run installs it)"
)
def test_docker_compose_validates_offline():
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _module_invocations(command) -> list[list[str]]:
    text = command if isinstance(command, str) else " ".join(command)
    words = shlex.split(text.replace("&&", " && "))
    calls, current = [], None
    for word in words:
        if word == "-m":
            current = []
            calls.append(current)
        elif word == "&&":
            current = None
        elif current is not None:
            current.append(word)
    return calls


def test_services_run_the_three_modules_with_valid_configs():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"label-party", "adversary", "feature-party"}
    modules = set()
    for name, service in services.items():
        for call in _module_invocations(service["command"]):
            module, args = call[0], call[1:]
            modules.add(module)
            config_path = REPO / args[args.index("--config") + 1]
            overrides = [a for a in args if "=" in a and not a.startswith("-")]
            load_config(config_path, overrides)
    assert modules == {"party_label", "adversary", "party_feature"}
