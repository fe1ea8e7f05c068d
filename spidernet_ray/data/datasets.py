"""The built-in datasets, registered under their names when this module is imported.

* File-free: ``digits`` (scikit-learn's bundled UCI digits, the offline default) and ``synthetic``
  (procedural, from the seed).
* Read from files with ``spidernet_ray.data.formats``: ``mnist``, ``fashion_mnist``, ``kmnist`` and
  ``emnist`` (balanced) from IDX files (KMNIST also from its npz files), ``cifar10`` and ``cifar100``
  from the python pickles.

``import spidernet_ray.data`` imports this module, so all of them are registered before anyone can
ask ``load_dataset`` for one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from spidernet_ray.data.formats import (
    _IDX_SUFFIXES,
    _FilesMissing,
    _cifar_images_and_labels,
    _describe,
    _find_files,
    _from_files,
    _label_names,
    _missing,
    _read_idx_dataset,
    _read_npz_array,
)
from spidernet_ray.data.registry import DataError, RawDataset, register_dataset, stratified_order


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
    return RawDataset(images[train], labels[train], images[test], labels[test], tuple("0123456789"), natural=False,
                      raw_scale=255 / 16)


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
# The MNIST family (IDX files) and CIFAR (python pickles)

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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
