"""Reading dataset files in their published formats, with numpy only.

* IDX, the MNIST family's format, gzipped or not (``read_idx``), and KMNIST's npz arrays.
* The CIFAR python pickles, through an unpickler that admits plain containers and numpy arrays and
  nothing else (``read_cifar_pickle``).
* Finding a dataset's files under the data root, in torchvision's layout or as a flat folder, and
  saying what is missing and where it was looked for.
* Downloading with torchvision: its only use, and only when asked.

The loaders built from these, one per dataset, are in ``spidernet_ray.data.datasets``.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spidernet_ray.data.registry import DataError, RawDataset


class _FilesMissing(DataError):
    """The files of a dataset are not where we looked (the one failure a download can fix)."""


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
# Whole datasets: the MNIST family's IDX files, KMNIST's npz arrays

_IDX_SUFFIXES = ("", ".gz")  # torchvision keeps both; the uncompressed file is faster to read


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


def _read_npz_array(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["arr_0"]
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise DataError(f"{path}: not a readable KMNIST npz file with an 'arr_0' array ({error})") from error
