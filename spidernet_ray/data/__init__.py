"""Datasets and the input pipeline.

Two halves, four modules:

* Loading. A registry maps a dataset name to a loader (``@register_dataset``, ``list_datasets``,
  ``load_dataset``). Loaders return the official train/test data as uint8 NCHW numpy arrays;
  ``load_dataset`` carves a seeded, stratified validation split out of the training data and
  computes the normalisation statistics from the training split alone. The result, ``DataSplits``,
  holds only numpy arrays so it pickles cheaply (e.g. through Ray's object store).
  Real datasets are read from the files users already have, with numpy only: the IDX files of the
  MNIST family and the CIFAR python pickles, in torchvision's layout or as a flat folder.
  torchvision is used only to download, and only when asked.

  - ``registry``: ``DataError``, ``RawDataset``, ``DataSplits``, the registry and the split.
  - ``formats``: the file formats (IDX, npz, CIFAR pickles), finding files, the torchvision download.
  - ``datasets``: the built-in datasets, registered when this package is imported.

* Batching. ``Batches`` moves one split to the training device once and turns it into batches there:
  convert to float, augment (random crop, flip, cutout) and normalise, each as one tensor operation
  per batch, so feeding the network costs far less than training it.

  - ``batches``: the augmentations, ``Batches``, ``Loaders`` and ``make_loaders``.

Everything public is re-exported here: import it from ``spidernet_ray.data``, not from the modules.
This package knows nothing about Ray: sharing ``DataSplits`` between workers is the trainable's job.
"""

from __future__ import annotations

from spidernet_ray.data.datasets import half_resolution  # the import registers the built-in datasets
from spidernet_ray.data.batches import Batches, Loaders, cutout, make_loaders, random_crop, random_flip
from spidernet_ray.data.formats import read_cifar_pickle, read_idx
from spidernet_ray.data.registry import (
    DataError,
    DatasetLoader,
    DataSplits,
    RawDataset,
    channel_stats,
    list_datasets,
    load_dataset,
    register_dataset,
    stratified_order,
)

__all__ = [
    "Batches",
    "DataError",
    "DataSplits",
    "DatasetLoader",
    "Loaders",
    "RawDataset",
    "channel_stats",
    "cutout",
    "half_resolution",
    "list_datasets",
    "load_dataset",
    "make_loaders",
    "random_crop",
    "random_flip",
    "read_cifar_pickle",
    "read_idx",
    "register_dataset",
    "stratified_order",
]
