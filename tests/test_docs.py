"""The docs a newcomer reads stay true to the code."""

from pathlib import Path

import pytest
from pydantic import BaseModel

from splitleak.config import RunConfig

REPO = Path(__file__).resolve().parent.parent


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_config_reference_lists_every_key():
    text = (REPO / "docs" / "config.md").read_text()
    missing = [key for key in _keys(RunConfig) if f"`{key}`" not in text]
    assert not missing, f"docs/config.md does not describe: {missing}"


def test_readme_quick_start_is_the_two_make_commands():
    text = (REPO / "README.md").read_text()
    assert "make demo" in text and "make test" in text


def runnable_blocks(text: str, language: str) -> list[str]:
    """Returns the fenced code blocks of a language that the README marks <!-- runnable -->."""
    import re

    return re.findall(r"<!-- runnable -->\s*```" + language + r"\n(.*?)```", text, flags=re.S)


def test_the_readme_python_api_example_runs(tmp_path):
    import subprocess
    import sys

    blocks = runnable_blocks((REPO / "README.md").read_text(), "python")
    assert blocks, "the README has no runnable Python block"
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("labels leaked:")
        assert (tmp_path / "runs" / "notebook" / "summary.json").exists()


def _shell_commands(text: str) -> list[str]:
    """Returns every command line of the fenced sh blocks, continuation lines joined, comments dropped."""
    import re

    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s#\s.*$", "", command).strip().rstrip("&").strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_readme_commands_run_from_the_venv_and_parse():
    """Every command the README and docs/sweeps.md show is on the path `make` creates (.venv/bin), and
    every splitleak command line parses and loads its config as the CLI would."""
    import shlex

    from splitleak.cli import _parse, build_parser
    from splitleak.config import load_config

    checked = 0
    for doc in ("README.md", "docs/sweeps.md"):
        for command in _shell_commands((REPO / doc).read_text()):
            words = shlex.split(command)
            if words[0] in ("make", "ray", "docker"):
                continue
            assert words[0].startswith(".venv/bin/"), f"{doc}: {command!r} is not on PATH after make demo"
            if words[0] != ".venv/bin/splitleak":
                continue
            args = _parse(build_parser(), words[1:])
            if hasattr(args, "overrides"):
                config = None if args.config is None else REPO / args.config
                if config is not None and not config.exists():
                    # run.yaml stands for the reader's own config
                    assert config.name.lower() == "run.yaml", f"{doc}: {args.config} does not exist"
                    config = None
                load_config(config, args.overrides)
            checked += 1
    assert checked >= 8


@pytest.mark.slow
def test_the_readme_runnable_shell_blocks_run_as_shown(tmp_path):
    """After `make demo`, the README's runnable shell blocks run as written from the repository root
    (here a scratch copy of it: configs/ and ../shared linked), with one epoch and at most 2,000 samples per
    demo to keep it short (tests/test_e2e.py runs the MNIST demo whole)."""
    import os
    import subprocess
    import sys

    blocks = runnable_blocks((REPO / "README.md").read_text(), "sh")
    assert len(blocks) >= 2, "the README marks its shell blocks runnable"
    root = tmp_path / "clone"
    root.mkdir()
    (root / "configs").symlink_to(REPO / "configs")
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(command: str) -> None:
        command = command.replace(".venv/bin/", f"{bin_dir}/")
        if " demo" in command:
            command += " train.epochs=1 data.max_samples=2000"
        done = subprocess.run(command, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])

    run(".venv/bin/splitleak demo --force")  # what `make demo` runs
    for block in blocks:
        for command in _shell_commands(f"```sh\n{block}```"):
            run(command)
    assert (root / "runs" / "label_dp" / "report.html").exists()
