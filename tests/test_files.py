"""Datasets from a user's files: CSV, NumPy arrays, an image folder; each party reads only its half;
bad files are reported by file and reason before any process starts."""

import gzip
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import splitleak.data as data_module
from conftest import REPO, small_config
from splitleak.data import DataError, check_dataset, load_dataset


def _csv(path, n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = rng.normal(0, 3, size=(3, 5))
    x = centres[labels] + rng.normal(size=(n, 5))
    # The label column sits between feature columns: the loaders must pick by name, not position.
    header = "f0,f1,diagnosis,f2,f3,f4"
    rows = [
        ",".join([f"{v:.5f}" for v in x[i, :2]] + [str(labels[i])] + [f"{v:.5f}" for v in x[i, 2:]]) for i in range(n)
    ]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return x, labels


def _image_folder(root, per_class=40, size=12, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = ["cat", "dog", "owl"]
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size, 3), 40, dtype=np.int16)
            pixels[..., c] = 200
            pixels += rng.integers(-30, 30, size=pixels.shape)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"img_{i:03d}.png")
    return classes


def _demo(run_dir, *overrides, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "splitleak.cli", "demo", "--run-dir", str(run_dir), *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_csv_loaders_read_only_their_own_columns(tmp_path, monkeypatch):
    x, labels = _csv(tmp_path / "table.csv")
    config = small_config(
        tmp_path,
        data={"name": "csv", "path": str(tmp_path / "table.csv"), "label_column": "diagnosis", "num_classes": 3},
    )
    asked = []
    original = data_module.read_csv_columns
    monkeypatch.setattr(
        data_module, "read_csv_columns", lambda path, columns: asked.append(columns) or original(path, columns)
    )
    dataset = load_dataset(config.data, 0)
    features = dataset.features()
    assert asked == [["f0", "f1", "f2", "f3", "f4"]], "the feature party converts the feature columns only"
    assert features.shape == (300, 5) and dataset.input_shape == (5,)
    asked.clear()
    assert dataset.labels().tolist() == labels.tolist()
    assert asked == [["diagnosis"]], "the label party converts the label column only"


def test_image_folder_loaders_never_cross_halves(tmp_path, monkeypatch):
    from PIL import Image

    _image_folder(tmp_path / "images")
    config = small_config(
        tmp_path, data={"name": "image_folder", "path": str(tmp_path / "images"), "image_size": 16, "num_classes": 3}
    )
    opened, class_listings = [], []
    real_open, real_classes = Image.open, data_module.image_classes
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    monkeypatch.setattr(data_module, "image_classes", lambda root: class_listings.append(root) or real_classes(root))
    features = load_dataset(config.data, 0).features()
    assert features.shape == (120, 3, 16, 16)
    assert len(opened) == 120 and all(p.suffix == ".png" for p in opened)
    assert class_listings == [], "the feature party never maps a folder name to a class"
    opened.clear()
    labels = load_dataset(config.data, 0).labels()
    assert opened == [], "the label party never opens an image"
    assert sorted(np.bincount(labels).tolist()) == [40, 40, 40]
    # Ids follow file names, not class folders: the order does not group the classes.
    assert labels[:3].tolist() == [0, 1, 2]


def test_npz_arrays_each_party_reads_one(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(50, 1, 10, 10)).astype(np.float32), y=np.arange(50) % 5)
    config = small_config(
        tmp_path, data={"name": "npz", "path": str(tmp_path / "a.npz"), "num_classes": 5, "image_size": 16}
    )
    dataset = load_dataset(config.data, 0)
    assert dataset.input_shape == (1, 16, 16)
    assert dataset.features().shape == (50, 1, 16, 16) and dataset.labels()[:6].tolist() == [0, 1, 2, 3, 4, 0]
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "x.npy", rng.normal(size=(50, 7)))
    np.save(tmp_path / "dir" / "y.npy", np.arange(50) % 5)
    config = small_config(tmp_path, data={"name": "npz", "path": str(tmp_path / "dir"), "num_classes": 5})
    assert check_dataset(config.data, 0) == 50


@pytest.mark.slow
def test_a_csv_dataset_runs_end_to_end_in_three_processes(tmp_path):
    _csv(tmp_path / "table.csv")
    done = _demo(
        tmp_path / "run",
        "data.name=csv",
        f"data.path={tmp_path / 'table.csv'}",
        "data.label_column=diagnosis",
        "data.num_classes=3",
        "train.epochs=3",
        "train.batch_size=32",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"]["test_accuracy"] > 0.8 and summary["leakage"]["train"]["samples"] == 240


@pytest.mark.slow
def test_an_image_folder_runs_end_to_end_in_three_processes(tmp_path):
    _image_folder(tmp_path / "images")
    done = _demo(
        tmp_path / "run",
        "data.name=image_folder",
        f"data.path={tmp_path / 'images'}",
        "data.image_size=16",
        "data.num_classes=3",
        "model.bottom=cnn",
        "model.cnn_channels=[8]",
        "train.epochs=3",
        "train.batch_size=16",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"]["test_accuracy"] > 0.8 and summary["leakage"]["train"]["samples"] == 96


def _idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def _mnist(root, images=20, labels=20, top_label=9):
    root.mkdir(parents=True, exist_ok=True)
    _idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((images, 28, 28)))
    _idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(labels) % (top_label + 1))


BAD_FILES = {
    "bad gzip": lambda root: (_mnist(root), (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")),
    "truncated IDX": lambda root: (
        _mnist(root),
        (root / "t10k-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(gzip.decompress((root / "t10k-labels-idx1-ubyte.gz").read_bytes())[:-3])
        ),
    ),
    "image and label counts differ": lambda root: _mnist(root, images=20, labels=18),
    "labels out of range": lambda root: _mnist(root, top_label=12),
}
EXPECTED = {
    "bad gzip": "t10k-images-idx3-ubyte.gz: cannot be read as gzip",
    "truncated IDX": "t10k-labels-idx1-ubyte.gz: header says (20,) (20 bytes) but holds 17 bytes",
    "image and label counts differ": (
        "the images files hold 20 samples (t10k-images-idx3-ubyte.gz: 20) but the labels files 18"
    ),
    "labels out of range": "labels [10, 11, 12] are outside 0..9",
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_reported_by_file_and_reason_before_any_process_starts(tmp_path, case):
    BAD_FILES[case](tmp_path / "mnist")
    done = _demo(tmp_path / "run", "data.name=mnist", f"data.path={tmp_path / 'mnist'}", timeout=120)
    assert done.returncode == 2, done.stderr
    assert EXPECTED[case] in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "logs").exists(), "no process was started"


def test_an_unreadable_image_is_named(tmp_path):
    _image_folder(tmp_path / "images", per_class=3)
    (tmp_path / "images" / "dog" / "img_001.png").write_bytes(b"not a png")
    config = small_config(
        tmp_path, data={"name": "image_folder", "path": str(tmp_path / "images"), "image_size": 8, "num_classes": 3}
    )
    with pytest.raises(DataError, match=r"dog/img_001.png: cannot be read as an image"):
        check_dataset(config.data, 0)
    bad = small_config(
        tmp_path, data={"name": "image_folder", "path": str(tmp_path / "images"), "image_size": 8, "num_classes": 4}
    )
    with pytest.raises(DataError, match="has 3 class sub-folders .* data.num_classes is 4"):
        check_dataset(bad.data, 0)


def _known_csv(tmp_path, rows):
    """A known-labels CSV of digits (seed 0) with the given (sample_id, label) rows."""
    path = tmp_path / "known.csv"
    path.write_text("sample_id,label\n" + "".join(f"{i},{y}\n" for i, y in rows))
    return path


def _digits_split():
    from splitleak.data import split_ids

    return split_ids(1797, test_fraction=small_config(REPO).data.test_fraction, seed=0)


BAD_KNOWN = {
    "unknown id": (lambda s: [(int(s.train_ids[0]), 1), (5000, 2)], "known.csv:3: sample 5000 is not in the dataset"),
    "outside the training split": (
        lambda s: [(int(s.test_ids[0]), 1)],
        "is not in the training split (known samples are training samples)",
    ),
    "label out of range": (lambda s: [(int(s.train_ids[0]), 10)], "known.csv:2: label 10 is outside 0..9"),
    "listed twice": (
        lambda s: [(int(s.train_ids[0]), 1), (int(s.train_ids[1]), 2), (int(s.train_ids[0]), 1)],
        f"known.csv:4: sample {int(_digits_split().train_ids[0])} is listed twice (also on line 2)",
    ),
}


@pytest.mark.parametrize("case", BAD_KNOWN)
def test_a_bad_known_labels_csv_is_named_before_any_process_starts(tmp_path, case):
    rows, expected = BAD_KNOWN[case]
    path = _known_csv(tmp_path, rows(_digits_split()))
    done = _demo(tmp_path / "run", f"adversary.known_labels={path}", timeout=120)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "logs").exists(), "no process was started"


def test_a_known_labels_csv_of_ones_own_is_the_one_the_run_uses(tmp_path):
    from splitleak.runner import prepare_run_dir

    split = _digits_split()
    path = _known_csv(tmp_path, [(int(split.train_ids[i]), i % 10) for i in range(10)])
    config = small_config(tmp_path, adversary={"mode": "proxy", "known_labels": str(path)})
    prepared = prepare_run_dir(config)
    assert prepared.adversary.known_labels.read_text() == path.read_text()


@pytest.mark.parametrize("where", ["under a file", "resume of nothing"])
def test_a_run_dir_that_cannot_be_written_or_resumed_exits_2(tmp_path, where):
    (tmp_path / "a-file").write_text("")
    run_dir, extra = (
        (tmp_path / "a-file" / "run", ()) if where == "under a file" else (tmp_path / "empty", ("--resume",))
    )
    done = _demo(run_dir, *extra, timeout=120)
    assert done.returncode == 2, done.stderr
    expected = "cannot be written: Not a directory" if where == "under a file" else "nothing to resume in"
    assert expected in done.stderr and "Traceback" not in done.stderr
