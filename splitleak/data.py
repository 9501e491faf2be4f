"""Datasets: each party loads only its own half (features or labels) and both
derive the same sample ids and train/test split from the seed.

A sample id is the sample's index in the dataset as loaded (files in a fixed
order), so ids agree between hosts that hold the same files.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitleak.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "Split",
    "draw_known_samples",
    "load_dataset",
    "read_known_samples",
    "read_idx",
    "split_ids",
    "write_known_samples",
]

DATASETS: Registry[type["Dataset"]] = Registry("dataset")


class DataError(ValueError):
    """A dataset that cannot be loaded, with what to do about it."""


@dataclass(frozen=True)
class Split:
    train_ids: np.ndarray
    test_ids: np.ndarray


def split_ids(num_samples: int, *, test_fraction: float, seed: int) -> Split:
    """Returns the train/test split of sample ids 0..num_samples-1, the same on every host for a seed."""
    order = np.random.default_rng(seed).permutation(num_samples)
    n_test = max(1, int(round(num_samples * test_fraction)))
    return Split(train_ids=np.sort(order[n_test:]), test_ids=np.sort(order[:n_test]))


class Dataset:
    """One dataset; features() and labels() are loaded separately by the two parties."""

    num_classes: int
    input_shape: tuple[int, ...]

    def __init__(self, data_cfg, seed: int) -> None:
        self.cfg = data_cfg
        self.seed = seed

    def features(self) -> np.ndarray:
        """Returns float32 features of shape (N, *input_shape), normalised."""
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        """Returns int64 labels of shape (N,)."""
        raise NotImplementedError

    def _limit(self, array: np.ndarray) -> np.ndarray:
        return array[: self.cfg.max_samples] if self.cfg.max_samples else array


@DATASETS.register("digits")
class Digits(Dataset):
    """scikit-learn's bundled 8x8 digits (1,797 samples, 10 classes)."""

    num_classes = 10
    input_shape = (1, 8, 8)

    def features(self) -> np.ndarray:
        from sklearn.datasets import load_digits

        images = load_digits().images.astype(np.float32) / 16.0
        return self._limit(images[:, None, :, :])

    def labels(self) -> np.ndarray:
        from sklearn.datasets import load_digits

        return self._limit(load_digits().target.astype(np.int64))


@DATASETS.register("breast_cancer")
class BreastCancer(Dataset):
    """scikit-learn's bundled Wisconsin breast cancer set (569 samples, binary)."""

    num_classes = 2
    input_shape = (30,)

    def features(self) -> np.ndarray:
        from sklearn.datasets import load_breast_cancer

        x = self._limit(load_breast_cancer().data.astype(np.float32))
        # Standardise with statistics of the training split only.
        train = split_ids(len(x), test_fraction=self.cfg.test_fraction, seed=self.seed).train_ids
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
        return ((x - mean) / std).astype(np.float32)

    def labels(self) -> np.ndarray:
        from sklearn.datasets import load_breast_cancer

        return self._limit(load_breast_cancer().target.astype(np.int64))


@DATASETS.register("synthetic")
class Synthetic(Dataset):
    """Gaussian classes of any size, for scale tests. Features are drawn given
    the labels, so the feature party generates both and keeps only the features."""

    def __init__(self, data_cfg, seed: int) -> None:
        super().__init__(data_cfg, seed)
        self.num_classes = data_cfg.synthetic.classes
        self.input_shape = (data_cfg.synthetic.dim,)

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        syn = self.cfg.synthetic
        rng = np.random.default_rng(self.seed + 7919)
        labels = rng.permutation(np.arange(syn.samples) % syn.classes).astype(np.int64)
        means = rng.normal(size=(syn.classes, syn.dim))
        means *= syn.separation / np.linalg.norm(means, axis=1, keepdims=True)
        x = means[labels] + rng.normal(size=(syn.samples, syn.dim))
        return x.astype(np.float32), labels

    def features(self) -> np.ndarray:
        return self._limit(self._draw()[0])

    def labels(self) -> np.ndarray:
        return self._limit(self._draw()[1])


def read_idx(path: Path) -> np.ndarray:
    """Returns the array stored in an IDX file (gzip-compressed or raw)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code != 0x08:
        raise DataError(f"{path}: IDX element type 0x{type_code:02x} is not supported (expected unsigned byte)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds {len(body)} bytes")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


class _IdxDataset(Dataset):
    """MNIST-format IDX files in data.path: train-* then t10k-*, whichever exist."""

    num_classes = 10
    input_shape = (1, 28, 28)
    mean, std = 0.0, 1.0

    def _files(self, kind: str) -> list[Path]:
        if self.cfg.path is None:
            raise DataError(f"data.path must name the directory holding the {self.cfg.name} IDX files")
        root = Path(self.cfg.path)
        if not root.is_dir():
            raise DataError(f"data.path {root} is not a directory")
        ndim = 3 if kind == "images" else 1
        found = []
        for prefix in ("train", "t10k"):
            for name in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
                for candidate in (root / f"{name}.gz", root / name):
                    if candidate.exists():
                        found.append(candidate)
                        break
                else:
                    continue
                break
        if not found:
            raise DataError(f"no {kind} IDX files (train-{kind}-idx{ndim}-ubyte[.gz] or t10k-...) in {root}")
        return found

    def features(self) -> np.ndarray:
        images = np.concatenate([read_idx(p) for p in self._files("images")])
        x = images.astype(np.float32)[:, None, :, :] / 255.0
        return self._limit((x - self.mean) / self.std)

    def labels(self) -> np.ndarray:
        return self._limit(np.concatenate([read_idx(p) for p in self._files("labels")]).astype(np.int64))


@DATASETS.register("mnist")
class Mnist(_IdxDataset):
    mean, std = 0.1307, 0.3081


@DATASETS.register("fashion_mnist")
class FashionMnist(_IdxDataset):
    mean, std = 0.2860, 0.3530


@DATASETS.register("cifar10")
class Cifar10(Dataset):
    """CIFAR-10 python batches (data_batch_1..5, test_batch) in data.path."""

    num_classes = 10
    input_shape = (3, 32, 32)
    _mean = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)[None, :, None, None]
    _std = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)[None, :, None, None]

    def _batches(self) -> list[dict]:
        if self.cfg.path is None:
            raise DataError("data.path must name the directory holding the CIFAR-10 python batches")
        root = Path(self.cfg.path)
        if (root / "cifar-10-batches-py").is_dir():
            root = root / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        files = [root / n for n in names if (root / n).exists()]
        if not files:
            raise DataError(f"no CIFAR-10 python batches (data_batch_1..5, test_batch) in {root}")
        batches = []
        for path in files:
            # The CIFAR-10 python format is a pickle; it is read only from a file the user points at.
            with open(path, "rb") as f:
                batches.append(pickle.load(f, encoding="bytes"))
        return batches

    def features(self) -> np.ndarray:
        x = np.concatenate([b[b"data"] for b in self._batches()]).reshape(-1, 3, 32, 32)
        return self._limit(((x.astype(np.float32) / 255.0 - self._mean) / self._std).astype(np.float32))

    def labels(self) -> np.ndarray:
        return self._limit(np.concatenate([np.asarray(b[b"labels"]) for b in self._batches()]).astype(np.int64))


def load_dataset(data_cfg, seed: int) -> Dataset:
    """Returns the configured dataset (nothing is read until features() or labels())."""
    return DATASETS.get(data_cfg.name)(data_cfg, seed)


def draw_known_samples(
    labels: np.ndarray, train_ids: np.ndarray, *, per_class: int, seed: int
) -> list[tuple[int, int]]:
    """Returns (sample_id, label) pairs: per_class training samples of each class, drawn by seed."""
    rng = np.random.default_rng(seed + 104729)
    known = []
    for cls in np.unique(labels[train_ids]):
        members = train_ids[labels[train_ids] == cls]
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        known.extend((int(i), int(cls)) for i in np.sort(chosen))
    return known


def write_known_samples(path: Path, known: list[tuple[int, int]]) -> None:
    """Writes the attacker's prior knowledge as a sample_id,label CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sample_id,label\n" + "".join(f"{i},{y}\n" for i, y in known))


def read_known_samples(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns (sample_ids, labels) from a sample_id,label CSV; raises DataError naming the bad line."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise DataError(f"cannot read known samples {path}: {err.strerror}") from None
    if not lines or lines[0].replace(" ", "") != "sample_id,label":
        raise DataError(f"{path}: the first line must be the header 'sample_id,label'")
    ids, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            sid, label = (int(v) for v in line.split(","))
        except ValueError:
            raise DataError(f"{path}:{number}: expected 'sample_id,label' with two integers, got {line!r}") from None
        ids.append(sid)
        labels.append(label)
    if not ids:
        raise DataError(f"{path} lists no known samples")
    return np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)
