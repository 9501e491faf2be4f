import gzip
import struct

import numpy as np
import pytest

from conftest import MNIST_DIR, needs_mnist, small_config
from splitleak.data import (
    DataError,
    draw_known_samples,
    load_breast_cancer_arrays,
    load_dataset,
    load_digits_arrays,
    read_idx,
    read_known_samples,
    split_ids,
    write_known_samples,
)


def test_split_is_deterministic_disjoint_and_complete():
    a = split_ids(1000, test_fraction=0.2, seed=3)
    b = split_ids(1000, test_fraction=0.2, seed=3)
    assert np.array_equal(a.train_ids, b.train_ids) and len(a.test_ids) == 200
    assert not set(a.train_ids) & set(a.test_ids)
    assert sorted([*a.train_ids, *a.test_ids]) == list(range(1000))
    assert not np.array_equal(split_ids(1000, test_fraction=0.2, seed=4).test_ids, a.test_ids)


def test_bundled_files_read_without_scikit_learn_equal_its_loaders():
    """The digits and breast cancer files are read straight from scikit-learn's package folder (its import costs
    seconds per process); the arrays must be scikit-learn's own, bit for bit."""
    from sklearn.datasets import load_breast_cancer, load_digits

    images, targets = load_digits_arrays()
    digits = load_digits()
    assert np.array_equal(images, digits.images) and images.dtype == digits.images.dtype
    assert np.array_equal(targets, digits.target)
    features, targets = load_breast_cancer_arrays()
    cancer = load_breast_cancer()
    assert np.array_equal(features, cancer.data) and features.dtype == cancer.data.dtype
    assert np.array_equal(targets, cancer.target)


@pytest.mark.parametrize(
    "name, classes, shape", [("digits", 10, (1, 8, 8)), ("breast_cancer", 2, (30,)), ("synthetic", 10, (32,))]
)
def test_bundled_datasets(tmp_path, name, classes, shape):
    config = small_config(tmp_path, data={"name": name})
    dataset = load_dataset(config.data, 0)
    x, y = dataset.features(), dataset.labels()
    assert x.dtype == np.float32 and x.shape[1:] == shape and len(x) == len(y)
    assert dataset.num_classes == classes and set(np.unique(y)) == set(range(classes))
    assert np.isfinite(x).all()


def _write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_raw_and_gzip_train_then_test(tmp_path, gz):
    suffix = ".gz" if gz else ""
    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 255, (6, 28, 28)), rng.integers(0, 255, (4, 28, 28))
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train_x, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(6) % 10, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", test_x, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(4) + 5, gz)
    config = small_config(tmp_path, data={"name": "fashion_mnist", "path": str(tmp_path)})
    dataset = load_dataset(config.data, 0)
    x, y = dataset.features(), dataset.labels()
    assert x.shape == (10, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8]
    assert np.allclose(x[6, 0] * 0.3530 + 0.2860, test_x[0] / 255.0, atol=1e-5)


def test_idx_errors_are_clear(tmp_path):
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    _write_idx(bad, np.zeros((2, 2, 2)), gz=False)
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError, match="holds 7 bytes"):
        read_idx(bad)
    config = small_config(tmp_path, data={"name": "mnist", "path": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset(config.data, 0).features()


def test_cifar10_batches(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 5), ("test_batch", 3)):
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}, f)
    config = small_config(tmp_path, data={"name": "cifar10", "path": str(tmp_path)})
    dataset = load_dataset(config.data, 0)
    assert dataset.features().shape == (8, 3, 32, 32) and dataset.labels().tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


@needs_mnist
def test_real_mnist_test_set():
    config = small_config(MNIST_DIR, data={"name": "mnist", "path": str(MNIST_DIR)})
    dataset = load_dataset(config.data, 0)
    y = dataset.labels()
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    split = split_ids(len(y), test_fraction=0.2, seed=0)
    assert (len(split.train_ids), len(split.test_ids)) == (8000, 2000)


def test_known_samples_round_trip_and_errors(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    known = draw_known_samples(labels, np.arange(9), per_class=2, seed=0)
    assert sorted(y for _, y in known) == [0, 0, 1, 1, 2, 2]
    assert all(labels[i] == y for i, y in known)
    path = tmp_path / "known.csv"
    write_known_samples(path, known)
    ids, ys = read_known_samples(path)
    assert list(zip(ids.tolist(), ys.tolist())) == known
    path.write_text("sample_id,label\n3,x\n")
    with pytest.raises(DataError, match=r"known.csv:2"):
        read_known_samples(path)
    path.write_text("id;label\n")
    with pytest.raises(DataError, match="header"):
        read_known_samples(path)


def test_each_party_loads_only_its_half(tmp_path, monkeypatch):
    """The feature party never calls labels(); the label party never calls features()."""
    from party_feature.party import build_feature_party
    from party_label.server import build_label_party
    from splitleak.data import Digits

    config = small_config(tmp_path)

    def refuse(self):
        raise AssertionError("this party must not load that half of the data")

    with monkeypatch.context() as m:
        m.setattr(Digits, "labels", refuse)
        build_feature_party(config)
    with monkeypatch.context() as m:
        m.setattr(Digits, "features", refuse)
        build_label_party(config)
