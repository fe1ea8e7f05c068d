"""Datasets and the input pipeline.

Two halves:

* Loading. A registry maps a dataset name to a loader (``@register_dataset``, ``list_datasets``,
  ``load_dataset``). Loaders return the official train/test data as uint8 NCHW numpy arrays;
  ``load_dataset`` carves a seeded, stratified validation split out of the training data and
  computes the normalisation statistics from the training split alone. The result, ``DataSplits``,
  holds only numpy arrays so it pickles cheaply (e.g. through Ray's object store).
  Real datasets are read from the files users already have, with numpy only: the IDX files of the
  MNIST family and the CIFAR python pickles, in torchvision's layout or as a flat folder.
  torchvision is used only to download, and only when asked.

* Batching. ``Batches`` moves one split to the training device once and turns it into batches there:
  convert to float, augment (random crop, flip, cutout) and normalise, each as one tensor operation
  per batch, so feeding the network costs far less than training it.

This module knows nothing about Ray: sharing ``DataSplits`` between workers is the trainable's job.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class DataError(ValueError):
    """A dataset could not be found, read or split."""


class _FilesMissing(DataError):
    """The files of a dataset are not where we looked (the one failure a download can fix)."""


# --------------------------------------------------------------------------------------------------
# What a loader returns and what load_dataset hands out


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A dataset as published: uint8 images (N, C, H, W), integer labels, the official test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    natural: bool  # photographs (crop/flip keep their meaning) rather than glyphs


@dataclass(frozen=True, eq=False, repr=False)
class DataSplits:
    """Train / validation / test splits of one dataset, as numpy arrays.

    Images are uint8 (N, C, H, W), labels int64. ``mean`` and ``std`` are per-channel statistics of
    the training split in the 0..1 scale. Validation is carved from the official training data and
    is what model selection uses; the test split is the official one, kept for final reporting.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    natural: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"DataSplits({self.name!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, natural={self.natural})"
        )


# --------------------------------------------------------------------------------------------------
# Registry

DatasetLoader = Callable[..., RawDataset]
"""Called as ``loader(root: Path | None, *, seed: int, download: bool) -> RawDataset``."""

_DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: make ``loader`` available to ``load_dataset(name)``."""

    def register(loader: DatasetLoader) -> DatasetLoader:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = loader
        return loader

    return register


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    subset: int | None = None,
    download: bool = False,
) -> DataSplits:
    """Load dataset ``name`` and split it into train / validation / test.

    ``root`` is the folder holding the dataset's files (ignored by the bundled ``digits`` and the
    procedural ``synthetic``). ``seed`` decides which training examples go to validation (and the
    ``synthetic`` data itself). ``subset=N`` keeps N examples of the training data, stratified,
    before ``val_fraction`` of them is carved off for validation; the test split is then cut to the
    same proportion of its size (a fixed, seed-independent choice) so quick runs stay quick.
    ``download=True`` fetches missing files with torchvision, if it is installed.
    """
    key = name.lower().replace("-", "_")
    if key not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    raw = _DATASETS[key](None if root is None else Path(root), seed=seed, download=download)
    _check_raw(key, raw)
    return _split(key, raw, seed=seed, val_fraction=val_fraction, subset=subset)


def _check_raw(name: str, raw: RawDataset) -> None:
    """Reject loader output the rest of the pipeline would silently mishandle."""
    for split, images, labels in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"{name}: {split} images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{name}: {len(images)} {split} images but labels {labels.dtype} {labels.shape}")
        if len(labels) and not 0 <= labels.min() <= labels.max() < len(raw.classes):
            raise DataError(f"{name}: {split} labels fall outside 0..{len(raw.classes) - 1}")
    if raw.x_train.shape[1:] != raw.x_test.shape[1:]:
        raise DataError(
            f"{name}: train images {raw.x_train.shape[1:]} and test images {raw.x_test.shape[1:]} differ in shape"
        )


def _split(name: str, raw: RawDataset, *, seed: int, val_fraction: float, subset: int | None) -> DataSplits:
    n_train = len(raw.y_train)
    pool_size = n_train if subset is None else min(subset, n_train)
    n_val = round(pool_size * val_fraction)
    if not 1 <= n_val < pool_size:
        wanted = f"{val_fraction:.0%} for validation and the rest for training"
        raise DataError(f"{name}: {pool_size} training examples are too few to keep {wanted}")
    # A prefix of a stratified order is itself stratified, so the pool, its validation part and
    # (approximately) its training part all keep the class proportions of the full training set.
    order = stratified_order(raw.y_train, np.random.default_rng(seed))
    val_index = np.sort(order[:n_val])
    train_index = np.sort(order[n_val:pool_size])

    n_test = len(raw.y_test)
    test_size = n_test if subset is None else min(n_test, math.ceil(pool_size * n_test / n_train))
    test_index = np.sort(stratified_order(raw.y_test, np.random.default_rng(0))[:test_size])

    x_train = raw.x_train[train_index]
    mean, std = channel_stats(x_train)
    return DataSplits(
        name=name,
        x_train=x_train,
        y_train=raw.y_train[train_index].astype(np.int64),
        x_val=raw.x_train[val_index],
        y_val=raw.y_train[val_index].astype(np.int64),
        x_test=raw.x_test[test_index],
        y_test=raw.y_test[test_index].astype(np.int64),
        classes=tuple(raw.classes),
        natural=raw.natural,
        mean=mean,
        std=std,
    )


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(len(labels))`` whose every prefix keeps the class proportions.

    Each example's key is its (random) rank within its class divided by the class size; sorting by
    that key interleaves the classes evenly.
    """
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    counts = np.bincount(shuffled)
    by_class = np.argsort(shuffled, kind="stable")
    class_starts = np.repeat(np.cumsum(counts) - counts, counts)
    rank_in_class = np.empty(len(labels))
    rank_in_class[by_class] = np.arange(len(labels)) - class_starts
    key = (rank_in_class + 0.5) / counts[shuffled]
    return order[np.argsort(key, kind="stable")]


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in the 0..1 scale.

    Counting the 256 possible values is exact and needs no float copy of the whole split.
    """
    values = np.arange(256) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        histogram = np.bincount(images[:, channel].ravel(), minlength=256)
        mean = histogram @ values / histogram.sum()
        variance = histogram @ (values - mean) ** 2 / histogram.sum()
        means.append(float(mean))
        stds.append(max(float(np.sqrt(variance)), 1e-6))  # a constant channel must not divide by 0
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------------------------------
# Built-in, file-free datasets


@register_dataset("digits")
def _load_digits(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    """scikit-learn's bundled UCI digits: 1797 8x8 images, the offline default.

    There is no official test split, so a fixed 20% (independent of ``seed``) is set aside as one.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # values 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    order = stratified_order(labels, np.random.default_rng(0))
    n_test = round(0.2 * len(labels))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return RawDataset(images[train], labels[train], images[test], labels[test], tuple("0123456789"), natural=False)


@register_dataset("synthetic")
def _load_synthetic(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    """Ten 1x8x8 classes, each a fixed random pattern under heavy noise: learnable, tiny, offline.

    Everything (patterns and noise) follows from ``seed``.
    """
    rng = np.random.default_rng(seed)
    num_classes, n_train, n_test = 10, 1000, 250
    patterns = rng.random((num_classes, 1, 8, 8)) < 0.5

    def sample(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(count) % num_classes
        images = 64 + 128 * patterns[labels] + rng.normal(0, 48, (count, 1, 8, 8))
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return RawDataset(x_train, y_train, x_test, y_test, tuple(str(c) for c in range(num_classes)), natural=False)


# --------------------------------------------------------------------------------------------------
# Reading files


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST family's format), gzipped or not."""
    data = _read_bytes(path)
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        magic = data[:4].hex() or "missing"
        raise DataError(f"{path}: wrong IDX magic {magic}, expected 000008 (unsigned bytes) then the rank")
    rank = data[3]
    header_size = 4 + 4 * rank
    if len(data) < header_size:
        raise DataError(f"{path}: IDX header cut short ({len(data)} bytes for a rank-{rank} header)")
    shape = struct.unpack(f">{rank}I", data[4:header_size])
    expected = header_size + math.prod(shape)
    if len(data) != expected:
        raise DataError(
            f"{path}: size mismatch, the header says shape {shape} ({expected} bytes) but the file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: truncated or corrupt file ({error})") from error


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else (pickles can run arbitrary code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # how the official CIFAR files were written
        ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2, pickle protocol < 5
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict[bytes, object]:
    """One file of the CIFAR 'python version': a pickled dict with bytes keys."""
    try:
        with path.open("rb") as stream:
            content = _ArrayUnpickler(stream, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise DataError(f"{path}: not a readable CIFAR python pickle ({error})") from error
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(content).__name__}")
    return content


def _cifar_field(path: Path, content: dict, key: bytes):
    if key not in content:
        raise DataError(f"{path}: missing key {key!r} (has {sorted(content)})")
    return content[key]


def _cifar_images_and_labels(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    content = read_cifar_pickle(path)
    data = np.asarray(_cifar_field(path, content, b"data"))
    try:
        labels = np.asarray(_cifar_field(path, content, label_key), dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: {label_key!r} is not a list of integer labels ({error})") from error
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"{path}: expected b'data' uint8 (N, 3072) and N labels, got {data.dtype} {data.shape} and {labels.shape}"
        )
    # Each row is the red plane, then green, then blue, each 32x32 row-major: exactly NCHW.
    return data.reshape(-1, 3, 32, 32), labels


def _label_names(path: Path, key: bytes) -> tuple[str, ...]:
    names = _cifar_field(path, read_cifar_pickle(path), key)
    return tuple(name.decode() if isinstance(name, bytes) else str(name) for name in names)


# --------------------------------------------------------------------------------------------------
# Finding files


def _find_files(
    root: Path, folders: Sequence[str], filenames: Sequence[str], suffixes: Sequence[str]
) -> list[Path] | None:
    """The files from the first of ``root/folder`` that holds all of them (with any of ``suffixes``)."""
    for folder in folders:
        directory = root / folder
        found = [_first_existing(directory, name, suffixes) for name in filenames]
        if all(found):
            return found
    return None


def _first_existing(directory: Path, name: str, suffixes: Sequence[str]) -> Path | None:
    for suffix in suffixes:
        path = directory / (name + suffix)
        if path.is_file():
            return path
    return None


def _missing(dataset: str, root: Path, folders: Sequence[str], expected: str) -> _FilesMissing:
    where = ", ".join(str(root / folder) for folder in folders)
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        return _FilesMissing(f"{dataset}: data root {root} {problem}; expected {expected} in one of: {where}")
    return _FilesMissing(f"{dataset}: expected {expected} together in one of: {where}; none holds them all")


def _require_root(dataset: str, root: Path | None) -> Path:
    if root is None:
        raise DataError(f"{dataset} is read from files: pass the folder holding them as the data root (--data-root)")
    return root


def _from_files(dataset: str, root: Path | None, download: bool, read: Callable[[Path], RawDataset]) -> RawDataset:
    """``read(root)``, downloading the files first if they are missing and ``download`` is set."""
    root = _require_root(dataset, root)
    try:
        return read(root)
    except _FilesMissing:
        if not download:
            raise
    _download_with_torchvision(dataset, root)
    return read(root)


_TORCHVISION_DATASETS = {
    "mnist": ("MNIST", {}),
    "fashion_mnist": ("FashionMNIST", {}),
    "kmnist": ("KMNIST", {}),
    "emnist": ("EMNIST", {"split": "balanced"}),
    "cifar10": ("CIFAR10", {}),
    "cifar100": ("CIFAR100", {}),
}


def _download_with_torchvision(dataset: str, root: Path) -> None:
    """Let torchvision fetch the files into its usual layout under ``root`` (which we then read)."""
    try:
        import torchvision.datasets  # optional and heavy: only ever needed here
    except Exception as error:  # a CUDA-linked wheel on a CPU torch fails with more than ImportError
        raise DataError(
            f"{dataset}: download=True needs torchvision, which cannot be imported ({error}); "
            f"install the 'vision' extra or place the files under {root} yourself"
        ) from error
    class_name, options = _TORCHVISION_DATASETS[dataset]
    try:
        for train in (True, False):
            getattr(torchvision.datasets, class_name)(str(root), train=train, download=True, **options)
    except Exception as error:  # network and archive failures come as many types
        raise DataError(f"{dataset}: torchvision could not download the files into {root} ({error})") from error


# --------------------------------------------------------------------------------------------------
# The MNIST family (IDX files) and CIFAR (python pickles)

_IDX_SUFFIXES = ("", ".gz")  # torchvision keeps both; the uncompressed file is faster to read
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _describe(filenames: Sequence[str], suffixes: Sequence[str]) -> str:
    optional_gz = " (each optionally .gz)" if ".gz" in suffixes else ""
    return ", ".join(filenames) + optional_gz


def _images_with_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{images_path} holds images {images.shape} but {labels_path} holds labels {labels.shape}")
    return images[:, None], labels.astype(np.int64)


def _read_idx_dataset(
    dataset: str, root: Path, folders: Sequence[str], filenames: Sequence[str], classes: Sequence[str]
) -> RawDataset:
    """Train images, train labels, test images, test labels: ``filenames`` in that order."""
    paths = _find_files(root, folders, filenames, _IDX_SUFFIXES)
    if paths is None:
        raise _missing(dataset, root, folders, _describe(filenames, _IDX_SUFFIXES))
    x_train, y_train = _images_with_labels(paths[0], paths[1])
    x_test, y_test = _images_with_labels(paths[2], paths[3])
    return RawDataset(x_train, y_train, x_test, y_test, tuple(classes), natural=False)


@register_dataset("mnist")
def _load_mnist(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    def read(root: Path) -> RawDataset:
        return _read_idx_dataset("mnist", root, ("MNIST/raw", "mnist", "."), _MNIST_FILES, "0123456789")

    return _from_files("mnist", root, download, read)


_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
)


@register_dataset("fashion_mnist")
def _load_fashion_mnist(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    def read(root: Path) -> RawDataset:
        folders = ("FashionMNIST/raw", "fashion-mnist", ".")
        return _read_idx_dataset("fashion_mnist", root, folders, _MNIST_FILES, _FASHION_CLASSES)

    return _from_files("fashion_mnist", root, download, read)


@register_dataset("fashion_mnist_14x14")
def _load_fashion_mnist_14x14(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    """Fashion-MNIST at half resolution: a quarter of the pixels, so about a quarter of the compute per
    image, for searches that must fit minutes on a CPU (benchmarks/compare.py)."""
    raw = _load_fashion_mnist(root, seed=seed, download=download)
    return replace(raw, x_train=half_resolution(raw.x_train), x_test=half_resolution(raw.x_test))


def half_resolution(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, C, H, W) with even H and W -> (N, C, H/2, W/2), each pixel the rounded mean of a
    2x2 block."""
    n, c, h, w = images.shape
    blocks = images.reshape(n, c, h // 2, 2, w // 2, 2).astype(np.uint16).sum(axis=(3, 5))
    return ((blocks + 2) // 4).astype(np.uint8)


_KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
_KMNIST_NPZ_FILES = (
    "kmnist-train-imgs.npz",
    "kmnist-train-labels.npz",
    "kmnist-test-imgs.npz",
    "kmnist-test-labels.npz",
)


def _read_npz_array(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["arr_0"]
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise DataError(f"{path}: not a readable KMNIST npz file with an 'arr_0' array ({error})") from error


@register_dataset("kmnist")
def _load_kmnist(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    """Kuzushiji-MNIST, as IDX files (torchvision, official) or as the official npz files."""
    folders = ("KMNIST/raw", "kmnist", ".")

    def read(root: Path) -> RawDataset:
        npz_paths = _find_files(root, folders, _KMNIST_NPZ_FILES, ("",))
        if npz_paths is None:
            try:
                return _read_idx_dataset("kmnist", root, folders, _MNIST_FILES, _KMNIST_CLASSES)
            except _FilesMissing:
                expected = f"either {_describe(_MNIST_FILES, _IDX_SUFFIXES)} or {', '.join(_KMNIST_NPZ_FILES)}"
                raise _missing("kmnist", root, folders, expected) from None
        x_train, y_train, x_test, y_test = (_read_npz_array(path) for path in npz_paths)
        if x_train.ndim != 3 or x_test.ndim != 3:
            shapes = f"{x_train.shape} and {x_test.shape}"
            raise DataError(f"kmnist: {npz_paths[0].parent} holds images {shapes}, not (N, H, W)")
        # _check_raw (in load_dataset) checks the dtypes and that labels match images.
        return RawDataset(x_train[:, None], y_train, x_test[:, None], y_test, _KMNIST_CLASSES, natural=False)

    return _from_files("kmnist", root, download, read)


_EMNIST_BALANCED_FILES = tuple(f"emnist-balanced-{name}" for name in _MNIST_FILES)
_EMNIST_BALANCED_CLASSES = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")


@register_dataset("emnist")
def _load_emnist(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    """EMNIST 'balanced': 47 classes of digits and letters."""

    def read(root: Path) -> RawDataset:
        folders = ("EMNIST/raw", "emnist", "gzip", ".")  # gzip/ is where the official archive unpacks
        raw = _read_idx_dataset("emnist", root, folders, _EMNIST_BALANCED_FILES, _EMNIST_BALANCED_CLASSES)
        # The EMNIST files store each image transposed (column-major); flip it back upright.
        return RawDataset(
            np.ascontiguousarray(raw.x_train.transpose(0, 1, 3, 2)), raw.y_train,
            np.ascontiguousarray(raw.x_test.transpose(0, 1, 3, 2)), raw.y_test, raw.classes, natural=False,
        )

    return _from_files("emnist", root, download, read)


_CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


@register_dataset("cifar10")
def _load_cifar10(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    folders = ("cifar-10-batches-py", ".")

    def read(root: Path) -> RawDataset:
        paths = _find_files(root, folders, _CIFAR10_FILES, ("",))
        if paths is None:
            raise _missing("cifar10", root, folders, _describe(_CIFAR10_FILES, ("",)))
        batches = [_cifar_images_and_labels(path, b"labels") for path in paths[:5]]
        x_test, y_test = _cifar_images_and_labels(paths[5], b"labels")
        classes = _label_names(paths[6], b"label_names")
        x_train = np.concatenate([images for images, _ in batches])
        y_train = np.concatenate([labels for _, labels in batches])
        return RawDataset(x_train, y_train, x_test, y_test, classes, natural=True)

    return _from_files("cifar10", root, download, read)


_CIFAR100_FILES = ("train", "test", "meta")


@register_dataset("cifar100")
def _load_cifar100(root: Path | None, *, seed: int, download: bool) -> RawDataset:
    """CIFAR-100 with its 100 fine labels."""
    folders = ("cifar-100-python", ".")

    def read(root: Path) -> RawDataset:
        paths = _find_files(root, folders, _CIFAR100_FILES, ("",))
        if paths is None:
            raise _missing("cifar100", root, folders, _describe(_CIFAR100_FILES, ("",)))
        x_train, y_train = _cifar_images_and_labels(paths[0], b"fine_labels")
        x_test, y_test = _cifar_images_and_labels(paths[1], b"fine_labels")
        classes = _label_names(paths[2], b"fine_label_names")
        return RawDataset(x_train, y_train, x_test, y_test, classes, natural=True)

    return _from_files("cifar100", root, download, read)


# --------------------------------------------------------------------------------------------------
# Batched augmentation on tensors (whole batches at once, on whatever device they live on)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Crop every image at its own random offset out of a copy zero-padded by ``padding`` pixels."""
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, batch, 1), generator=generator, device=device)
    rows = offsets[0] + torch.arange(height, device=device)  # (B, H): the padded rows each image keeps
    cols = offsets[1] + torch.arange(width, device=device)  # (B, W)
    # Two gathers, rows then columns: cheaper than one gather over both.
    kept_rows = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, width + 2 * padding))
    return kept_rows.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left to right."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square (clipped at the border) at a random centre in every image.

    Applied after normalisation, as in DeVries & Taylor (2017), so the square reads as 'average'.
    """
    batch, _, height, width = images.shape
    device = images.device
    top = torch.randint(0, height, (batch, 1), generator=generator, device=device) - size // 2
    left = torch.randint(0, width, (batch, 1), generator=generator, device=device) - size // 2
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top) & (rows < top + size)  # (B, H)
    in_cols = (cols >= left) & (cols < left + size)  # (B, W)
    square = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill(square[:, None], 0.0)


class Batches:
    """One split as a re-iterable stream of ``(images, labels)`` batches on ``device``.

    The uint8 images move to the device once. Each batch is then augmented (``crop_padding`` > 0:
    random crop after zero padding; ``flip``: random horizontal flip; ``cutout`` > 0: a random
    square of that side zeroed), converted to float and normalised with ``mean`` / ``std`` (0..1
    scale), all as whole-batch tensor operations. Every iteration is one epoch; with ``shuffle`` the
    order, like the augmentation, comes from a generator seeded once with ``seed``, so a run is
    reproducible while epochs differ. ``drop_last`` drops an incomplete final batch (a batch of one
    breaks BatchNorm in training) unless it is the only batch.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        cutout: int = 0,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        # torch.tensor copies: arrays that come out of Ray's object store are read-only.
        self.images = torch.tensor(images, dtype=torch.uint8, device=self.device)
        self.labels = torch.tensor(labels, dtype=torch.int64, device=self.device)
        channels = self.images.shape[1]
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
        # (x / 255 - mean) / std as one multiply and one subtract.
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = mean_t / std_t
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.crop_padding = crop_padding
        self.flip = flip
        self.cutout = cutout
        self.drop_last = drop_last
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        count = len(self.labels)
        if self.drop_last and count >= self.batch_size:
            return count // self.batch_size
        return math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.labels)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator, device=self.device)
        else:
            order = torch.arange(count, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self._prepare(self.images[index]), self.labels[index]

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        # Crop and flip on uint8: a quarter of the memory traffic of float.
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, self.generator)
        if self.flip:
            images = random_flip(images, self.generator)
        normalised = images.float().mul_(self._scale).sub_(self._shift)
        if self.cutout:
            normalised = cutout(normalised, self.cutout, self.generator)
        return normalised


@dataclass(frozen=True)
class Loaders:
    train: Batches
    val: Batches
    test: Batches


def make_loaders(
    splits: DataSplits,
    batch_size: int,
    device: torch.device | str = "cpu",
    *,
    augment: bool = True,
    cutout: int = 0,
    seed: int = 0,
) -> Loaders:
    """Batches for the three splits: the training one shuffled and augmented, the others plain.

    The augmentation follows the data: random crop (padding of 1/8 of the side, 4 px at 32x32) and
    horizontal flip for natural images only, since a shifted or mirrored glyph can change class;
    ``cutout`` (side length, 0 = off) for any dataset when asked.
    """
    natural = augment and splits.natural
    stats = {"mean": splits.mean, "std": splits.std, "device": device}
    train = Batches(
        splits.x_train, splits.y_train, batch_size, **stats, shuffle=True, drop_last=True, seed=seed,
        crop_padding=splits.input_shape[1] // 8 if natural else 0, flip=natural, cutout=cutout if augment else 0,
    )
    val = Batches(splits.x_val, splits.y_val, batch_size, **stats)
    test = Batches(splits.x_test, splits.y_test, batch_size, **stats)
    return Loaders(train, val, test)
