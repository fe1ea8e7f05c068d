"""The input pipeline: batched augmentation and batching on the training device.

* Augmentation of whole batches of tensors, on whatever device they live on: ``random_crop``,
  ``random_flip``, ``cutout``.
* ``Batches`` moves one split to the training device once and turns it into batches there: convert
  to float, augment and normalise, each as one tensor operation per batch, so feeding the network
  costs far less than training it.
* ``make_loaders`` turns a ``DataSplits`` into ``Loaders`` (train / val / test ``Batches``), with the
  augmentation that suits the data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spidernet_ray.data.registry import DataSplits


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
