"""The docs a newcomer reads stay true to the code."""

from pathlib import Path

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
