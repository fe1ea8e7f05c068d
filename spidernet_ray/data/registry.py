"""The dataset registry, and the splitting of what a loader returns.

* ``DataError``: a dataset could not be found, read or split.
* ``RawDataset``, what a loader returns: the official train/test data as uint8 NCHW numpy arrays.
* The registry: ``@register_dataset`` maps a name to a loader; ``list_datasets``, ``load_dataset``.
* The split: ``load_dataset`` checks the loader's output, carves a seeded, stratified validation split
  out of the training data (``stratified_order``) and computes the normalisation statistics from the
  training split alone (``channel_stats``). The result, ``DataSplits``, holds only numpy arrays so it
  pickles cheaply (e.g. through Ray's object store).

The built-in datasets register themselves in ``spidernet_ray.data.datasets``, which imports this
module; this module imports no other part of the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A dataset could not be found, read or split."""


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
    # Published pixel values times raw_scale give the uint8 0..255 images stored here (digits: 0..16 -> 0..255).
    raw_scale: float = 1.0


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
    raw_scale: float = 1.0

    def preprocessing(self) -> dict:
        """Everything a deployed model needs to turn a published image into its input, as JSON data:
        ``x = (round(pixels * raw_scale) / 255 - mean) / std`` per channel, shape (N, C, H, W)."""
        return {
            "dataset": self.name,
            "input_shape": list(self.input_shape),
            "layout": "float32 (N, C, H, W)",
            "raw_scale": self.raw_scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "formula": "x = (round(pixels * raw_scale) / 255 - mean) / std, per channel",
            "classes": list(self.classes),
            "output": "logits of the last head, one per class (argmax = predicted class)",
        }

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
        raw_scale=raw.raw_scale,
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
