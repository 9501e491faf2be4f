"""Datasets: each party loads only its own half (features or labels) and both
derive the same sample ids and train/test split from the seed.

A sample id is the sample's index in the dataset as loaded (files in a fixed
order), so ids agree between hosts that hold the same files.
"""

from __future__ import annotations

import gzip
import logging
import zlib
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
    "check_dataset",
    "image_classes",
    "image_files",
    "read_csv_columns",
    "draw_known_samples",
    "load_dataset",
    "read_known_samples",
    "check_known_samples",
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
    """One dataset; features() and labels() are loaded separately by the two parties.

    num_classes and input_shape are known without reading either half (both are public).
    """

    num_classes: int
    # Shape of one sample as stored; images are (C, H, W).
    native_shape: tuple[int, ...]

    def __init__(self, data_cfg, seed: int) -> None:
        self.cfg = data_cfg
        self.seed = seed

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Returns the shape of one sample as the model sees it (images resized to data.image_size)."""
        shape = tuple(self.native_shape)
        if self.cfg.image_size and len(shape) == 3:
            return (shape[0], self.cfg.image_size, self.cfg.image_size)
        return shape

    def features(self) -> np.ndarray:
        """Returns float32 features of shape (N, *input_shape), normalised."""
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        """Returns int64 labels of shape (N,)."""
        raise NotImplementedError

    def _limit(self, array: np.ndarray) -> np.ndarray:
        return array[: self.cfg.max_samples] if self.cfg.max_samples else array

    def _resized(self, images: np.ndarray) -> np.ndarray:
        """Returns (N, C, H, W) images resized to data.image_size (bilinear, antialiased), when set."""
        size = self.cfg.image_size
        if not size or images.shape[2:] == (size, size):
            return images
        import torch
        import torch.nn.functional as F

        out = F.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear", antialias=True)
        return out.numpy().astype(np.float32)

    def _checked_labels(self, labels: np.ndarray, source: object) -> np.ndarray:
        """Returns labels after checking they are classes of this dataset; raises DataError naming source."""
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if len(bad):
            raise DataError(
                f"{source}: labels {sorted(set(bad.tolist()))[:5]} are outside 0..{self.num_classes - 1} "
                f"({self.num_classes} classes)"
            )
        return labels


def _bundled(name: str) -> Path | None:
    """Returns the path of a data file scikit-learn ships (sklearn/datasets/data/NAME), found without importing
    scikit-learn; None where this scikit-learn lays its files out otherwise.

    Importing scikit-learn costs about 3 s of CPU, and a demo pays it in three processes (the check before
    the parties start, the label party, the feature party) for a file NumPy reads in milliseconds. The
    loaders below read the files as scikit-learn's own `load_*` functions do, and fall back to them;
    tests/test_data.py checks both give the same arrays.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Returns scikit-learn's digits as (images (1797, 8, 8) float64 in 0..16, targets int64)."""
    path = _bundled("digits.csv.gz")
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target.astype(np.int64)
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def load_breast_cancer_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Returns scikit-learn's breast cancer set as (features (569, 30) float64, targets int64)."""
    path = _bundled("breast_cancer.csv")
    if path is None:
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        return bunch.data, bunch.target.astype(np.int64)
    # The first line holds the counts and the class names; then one sample per line, its target last.
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, :-1], data[:, -1].astype(np.int64)


@DATASETS.register("digits")
class Digits(Dataset):
    """scikit-learn's bundled 8x8 digits (1,797 samples, 10 classes)."""

    num_classes = 10
    native_shape = (1, 8, 8)

    def features(self) -> np.ndarray:
        images = load_digits_arrays()[0].astype(np.float32) / 16.0
        return self._resized(self._limit(images[:, None, :, :]))

    def labels(self) -> np.ndarray:
        return self._limit(load_digits_arrays()[1])


@DATASETS.register("breast_cancer")
class BreastCancer(Dataset):
    """scikit-learn's bundled Wisconsin breast cancer set (569 samples, binary)."""

    num_classes = 2
    native_shape = (30,)

    def features(self) -> np.ndarray:
        x = self._limit(load_breast_cancer_arrays()[0].astype(np.float32))
        # Standardise with statistics of the training split only.
        train = split_ids(len(x), test_fraction=self.cfg.test_fraction, seed=self.seed).train_ids
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
        return ((x - mean) / std).astype(np.float32)

    def labels(self) -> np.ndarray:
        return self._limit(load_breast_cancer_arrays()[1])


@DATASETS.register("synthetic")
class Synthetic(Dataset):
    """Gaussian classes of any size, for scale tests. Features are drawn given
    the labels, so the feature party generates both and keeps only the features."""

    def __init__(self, data_cfg, seed: int) -> None:
        super().__init__(data_cfg, seed)
        self.num_classes = data_cfg.synthetic.classes
        self.native_shape = (data_cfg.synthetic.dim,)

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
    """Returns the array stored in an IDX file (gzip-compressed or raw); raises DataError naming a bad file."""
    raw = _read_idx_bytes(path)
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
    native_shape = (1, 28, 28)
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
        parts = [read_idx(p) for p in self._files("images")]
        for path, part in zip(self._files("images"), parts):
            if part.ndim != 3:
                raise DataError(f"{path}: expected images (N, H, W), the IDX file holds shape {part.shape}")
        x = np.concatenate(parts).astype(np.float32)[:, None, :, :] / 255.0
        return self._resized(self._limit((x - self.mean) / self.std))

    def labels(self) -> np.ndarray:
        files = self._files("labels")
        labels = [self._checked_labels(read_idx(p).astype(np.int64), p) for p in files]
        return self._limit(np.concatenate(labels))

    def counts(self) -> dict[str, int]:
        """Returns the number of samples in each images and labels file (read from the headers)."""
        return {str(p): _idx_count(p) for kind in ("images", "labels") for p in self._files(kind)}


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
    native_shape = (3, 32, 32)
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
        return self._resized(self._limit(((x.astype(np.float32) / 255.0 - self._mean) / self._std).astype(np.float32)))

    def labels(self) -> np.ndarray:
        labels = np.concatenate([np.asarray(b[b"labels"]) for b in self._batches()]).astype(np.int64)
        return self._limit(self._checked_labels(labels, self.cfg.path))


def _read_idx_bytes(path: Path, size: int = -1) -> bytes:
    """Returns the first size bytes (all: -1) of an IDX file, gunzipped if it ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read(size)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'} ({err})") from None


def _idx_count(path: Path) -> int:
    head = _read_idx_bytes(path, 8)
    if len(head) < 8:
        raise DataError(f"{path}: too short for an IDX header")
    return struct.unpack(">I", head[4:8])[0]


def _standardised(x: np.ndarray, data_cfg, seed: int) -> np.ndarray:
    """Returns x standardised per feature (per channel for images) with the training split's statistics."""
    train = split_ids(len(x), test_fraction=data_cfg.test_fraction, seed=seed).train_ids
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    keep = x.ndim == 4
    mean = x[train].mean(axis=axes, keepdims=keep)
    std = x[train].std(axis=axes, keepdims=keep) + 1e-6
    return ((x - mean) / std).astype(np.float32)


def read_csv_columns(path: Path, columns: list[str]) -> np.ndarray:
    """Returns the named columns of a CSV file with a header row as a float64 array (rows, columns).

    Only the named columns are converted; a cell that is not a number is an error naming file, line and column.
    """
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path} is empty (expected a header row)")
            header = [h.strip() for h in header]
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(header)})")
            where = [header.index(c) for c in columns]
            rows = []
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
                try:
                    rows.append([float(row[i]) for i in where])
                except ValueError:
                    bad = next(columns[k] for k, i in enumerate(where) if not _is_number(row[i]))
                    raise DataError(f"{path}:{line}: column {bad!r} is not a number") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    return np.asarray(rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_header(path: Path) -> list[str]:
    """Returns the column names of a CSV file."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    if not first.strip():
        raise DataError(f"{path} is empty (expected a header row)")
    import csv

    return [h.strip() for h in next(csv.reader([first]))]


@DATASETS.register("csv")
class CsvDataset(Dataset):
    """A CSV file (data.path) with a header: numeric feature columns and one label column
    (data.label_column). The feature party converts only the feature columns, the label party only
    the label column. Sample ids are row positions. Features are standardised with the training
    split's statistics."""

    def __init__(self, data_cfg, seed: int) -> None:
        super().__init__(data_cfg, seed)
        self.num_classes = data_cfg.num_classes
        self.path = Path(data_cfg.path)

    def _feature_columns(self) -> list[str]:
        header = csv_header(self.path)
        if self.cfg.label_column not in header:
            raise DataError(f"{self.path}: no label column {self.cfg.label_column!r} (columns: {', '.join(header)})")
        return [c for c in header if c != self.cfg.label_column]

    @property
    def native_shape(self) -> tuple[int, ...]:
        return (len(self._feature_columns()),)

    def features(self) -> np.ndarray:
        x = self._limit(read_csv_columns(self.path, self._feature_columns()).astype(np.float32))
        return _standardised(x, self.cfg, self.seed)

    def labels(self) -> np.ndarray:
        raw = read_csv_columns(self.path, [self.cfg.label_column])[:, 0]
        if not np.array_equal(raw, np.round(raw)):
            raise DataError(f"{self.path}: column {self.cfg.label_column!r} holds non-integer labels")
        return self._limit(self._checked_labels(raw.astype(np.int64), self.path))


def _npy_shape(path: Path, member: str) -> tuple[int, ...]:
    """Returns the shape of array `member` (x or y) of an .npz file or a directory of .npy files, from its header."""
    import zipfile

    try:
        if path.is_dir():
            return tuple(np.load(path / f"{member}.npy", mmap_mode="r").shape)
        with zipfile.ZipFile(path) as archive:
            with archive.open(f"{member}.npy") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, _ = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(f)
                return tuple(shape)
    except KeyError:
        raise DataError(f"{path} has no array {member!r} (expected x and y)") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read array {member!r} ({err})") from None


def _npy_array(path: Path, member: str) -> np.ndarray:
    try:
        if path.is_dir():
            return np.load(path / f"{member}.npy", allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            return archive[member]
    except KeyError:
        raise DataError(f"{path} has no array {member!r} (expected x and y)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read array {member!r} ({err})") from None


@DATASETS.register("npz")
class NpzDataset(Dataset):
    """NumPy arrays x (features, any shape per sample) and y (integer labels): an .npz file, or a
    directory holding x.npy and y.npy (data.path). The feature party reads only x, the label party
    only y. Images (x of shape (N, C, H, W)) are resized to data.image_size when set. Features are
    standardised with the training split's statistics."""

    def __init__(self, data_cfg, seed: int) -> None:
        super().__init__(data_cfg, seed)
        self.num_classes = data_cfg.num_classes
        self.path = Path(data_cfg.path)

    @property
    def native_shape(self) -> tuple[int, ...]:
        return _npy_shape(self.path, "x")[1:]

    def features(self) -> np.ndarray:
        x = _npy_array(self.path, "x")
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{self.path}: x has dtype {x.dtype}, not numbers")
        x = _standardised(self._limit(x.astype(np.float32)), self.cfg, self.seed)
        return self._resized(x) if x.ndim == 4 else x

    def labels(self) -> np.ndarray:
        y = _npy_array(self.path, "y")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{self.path}: y must be a 1-D array of integer labels, got {y.dtype} of shape {y.shape}")
        return self._limit(self._checked_labels(y.astype(np.int64), self.path))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def image_files(root: Path) -> list[Path]:
    """Returns the image files of an image folder in sample-id order: by file name, then by relative path.

    Sorting by file name rather than by class folder keeps the ids from telling the classes apart.
    """
    if not root.is_dir():
        raise DataError(f"data.path {root} is not a directory")
    files = [p for p in root.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the class sub-folders of {root}")
    return sorted(files, key=lambda p: (p.name, str(p.relative_to(root))))


def image_classes(root: Path) -> list[str]:
    """Returns the class names of an image folder: its sub-folder names, sorted (class i is the i-th)."""
    if not root.is_dir():
        raise DataError(f"data.path {root} is not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir())


@DATASETS.register("image_folder")
class ImageFolderDataset(Dataset):
    """A folder with one sub-folder per class (as torchvision's ImageFolder), images resized to
    data.image_size and converted to data.image_channels. The feature party opens the image files
    and never maps a folder to a class; the label party maps each image's folder to its class and
    never opens an image. data.num_classes (public) must equal the number of sub-folders."""

    def __init__(self, data_cfg, seed: int) -> None:
        super().__init__(data_cfg, seed)
        self.root = Path(data_cfg.path)
        self.num_classes = data_cfg.num_classes

    @property
    def native_shape(self) -> tuple[int, ...]:
        return (self.cfg.image_channels, self.cfg.image_size, self.cfg.image_size)

    def features(self) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        mode = "L" if self.cfg.image_channels == 1 else "RGB"
        size = self.cfg.image_size
        images = []
        for path in self._limit(np.asarray(image_files(self.root), dtype=object)):
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert(mode).resize((size, size), Image.BILINEAR), dtype=np.float32)
            except (OSError, UnidentifiedImageError) as err:
                raise DataError(f"{path}: cannot be read as an image ({err})") from None
            images.append(pixels.reshape(size, size, -1).transpose(2, 0, 1) / 255.0)
        return _standardised(np.stack(images).astype(np.float32), self.cfg, self.seed)

    def labels(self) -> np.ndarray:
        classes = image_classes(self.root)
        if len(classes) != self.num_classes:
            raise DataError(
                f"{self.root} has {len(classes)} class sub-folders ({', '.join(classes)}), "
                f"data.num_classes is {self.num_classes}"
            )
        index = {name: i for i, name in enumerate(classes)}
        files = self._limit(np.asarray(image_files(self.root), dtype=object))
        return np.asarray([index[p.parent.name] for p in files], dtype=np.int64)


def check_dataset(data_cfg, seed: int) -> int:
    """Reads both halves of the dataset once and returns its size; raises DataError naming the file and
    the reason (unreadable files, image and label counts that differ, labels out of range).

    The experimenter's step before any party starts: each party later reads only its own half.
    """
    dataset = load_dataset(data_cfg, seed)
    if isinstance(dataset, _IdxDataset):
        counts = dataset.counts()
        images = {p: n for p, n in counts.items() if "images" in Path(p).name}
        labels = {p: n for p, n in counts.items() if "labels" in Path(p).name}
        if sum(images.values()) != sum(labels.values()):
            raise DataError(
                f"{data_cfg.path}: the images files hold {sum(images.values())} samples "
                f"({', '.join(f'{Path(p).name}: {n}' for p, n in images.items())}) but the labels files "
                f"{sum(labels.values())} ({', '.join(f'{Path(p).name}: {n}' for p, n in labels.items())})"
            )
    labels = dataset.labels()
    features = dataset.features()
    if len(features) != len(labels):
        raise DataError(f"{data_cfg.path}: {len(features)} samples of features but {len(labels)} labels")
    if features.shape[1:] != dataset.input_shape:
        raise DataError(f"{data_cfg.path}: samples have shape {features.shape[1:]}, expected {dataset.input_shape}")
    if not np.isfinite(features).all():
        raise DataError(f"{data_cfg.path}: the features hold NaN or infinite values")
    return len(labels)


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


def read_known_samples(
    path: Path,
    *,
    size: int | None = None,
    num_classes: int | None = None,
    train_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (sample_ids, labels) from a sample_id,label CSV; raises DataError naming the bad line.

    A sample listed twice is refused. With size, num_classes and train_ids (the dataset the CSV belongs
    to), so are ids outside 0..size-1, labels outside 0..num_classes-1 and ids outside the training split."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise DataError(f"cannot read known samples {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text file (expected a sample_id,label CSV)") from None
    if not lines or lines[0].replace(" ", "") != "sample_id,label":
        raise DataError(f"{path}: the first line must be the header 'sample_id,label'")
    in_train = None
    if train_ids is not None and size is not None:
        in_train = np.zeros(size, dtype=bool)
        in_train[train_ids] = True
    ids, labels, first_line = [], [], {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            sid, label = (int(v) for v in line.split(","))
        except ValueError:
            raise DataError(f"{path}:{number}: expected 'sample_id,label' with two integers, got {line!r}") from None
        if sid in first_line:
            raise DataError(f"{path}:{number}: sample {sid} is listed twice (also on line {first_line[sid]})")
        if size is not None and not 0 <= sid < size:
            raise DataError(f"{path}:{number}: sample {sid} is not in the dataset (its ids are 0..{size - 1})")
        if num_classes is not None and not 0 <= label < num_classes:
            raise DataError(f"{path}:{number}: label {label} is outside 0..{num_classes - 1}")
        if in_train is not None and not in_train[sid]:
            raise DataError(
                f"{path}:{number}: sample {sid} is not in the training split (known samples are training samples)"
            )
        first_line[sid] = number
        ids.append(sid)
        labels.append(label)
    if not ids:
        raise DataError(f"{path} lists no known samples")
    return np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def check_known_samples(config, path: Path) -> None:
    """Raises DataError when the known-samples CSV at path does not fit the run's dataset: ids outside it or
    outside its training split, labels outside its classes, a sample listed twice. (The experimenter's
    check before a run: it reads the dataset's labels for its size.)"""
    dataset = load_dataset(config.data, config.run.seed)
    size = len(dataset.labels())
    split = split_ids(size, test_fraction=config.data.test_fraction, seed=config.run.seed)
    read_known_samples(path, size=size, num_classes=dataset.num_classes, train_ids=split.train_ids)
