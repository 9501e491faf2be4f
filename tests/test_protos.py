import tempfile
from pathlib import Path

from splitleak.protogen import REPO_ROOT, generate


def test_committed_stubs_match_protos():
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        assert generated, "protoc generated nothing"
        for path in generated:
            committed = REPO_ROOT / path.relative_to(tmp)
            assert committed.exists(), f"{committed} is missing: run `make protos`"
            assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `make protos`"
