"""The data layer: dataset files in their published layouts, the splits, and the batch pipeline."""

from __future__ import annotations

import gzip
import importlib
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spidernet_ray.data import (
    Batches,
    DataError,
    RawDataset,
    cutout,
    half_resolution,
    list_datasets,
    load_dataset,
    make_loaders,
    random_crop,
    register_dataset,
    registry,
)

FASHION_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# --------------------------------------------------------------------------------------------------
# Writing small files in the official formats


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as stream:
            stream.write(content)
    else:
        path.write_bytes(content)


def glyphs(count: int, side: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random (count, side, side) uint8 images and labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, side, side), dtype=np.uint8), np.arange(count) % 10


def write_mnist_files(directory: Path, filenames=MNIST_FILES, suffix=".gz", n_train=40, n_test=20) -> None:
    x_train, y_train = glyphs(n_train, seed=1)
    x_test, y_test = glyphs(n_test, seed=2)
    for name, array in zip(filenames, (x_train, y_train, x_test, y_test)):
        write_idx(directory / (name + suffix), array)


def write_pickle(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=2))


def cifar_rows(count: int) -> np.ndarray:
    """(count, 3072) rows: red plane 0..255 in row-major order, green all 100, blue all 200."""
    red = np.arange(1024) % 256
    row = np.concatenate([red, np.full(1024, 100), np.full(1024, 200)]).astype(np.uint8)
    return np.tile(row, (count, 1))


def write_cifar10(directory: Path, per_batch: int = 10) -> None:
    batch = {b"data": cifar_rows(per_batch), b"labels": (np.arange(per_batch) % 10).tolist()}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(directory / name, batch)
    write_pickle(directory / "batches.meta", {b"label_names": [f"class{c}".encode() for c in range(10)]})


def write_cifar100(directory: Path) -> None:
    for name, count in (("train", 200), ("test", 100)):
        labels = np.arange(count) % 100
        write_pickle(
            directory / name,
            {b"data": cifar_rows(count), b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist()},
        )
    write_pickle(directory / "meta", {b"fine_label_names": [f"fine{c}".encode() for c in range(100)]})


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def fashion_dir() -> Path:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real Fashion-MNIST files not found under {FASHION_DIR}")
    return FASHION_DIR


@pytest.fixture(scope="module")
def fashion(fashion_dir):
    return load_dataset("fashion_mnist", fashion_dir, seed=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root / "cifar-10-batches-py")
    return load_dataset("cifar10", root)


def numbered_images(count: int, fill: int) -> np.ndarray:
    """Images whose first two pixels spell their index, so every example is identifiable."""
    images = np.full((count, 1, 4, 4), fill, dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(count) % 256
    images[:, 0, 0, 1] = np.arange(count) // 256
    return images


def image_ids(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)


def load_numbered(root, *, seed, download) -> RawDataset:
    """200 dark training images and 50 bright test images, ten classes, each image unique."""
    return RawDataset(
        numbered_images(200, fill=10), np.arange(200) % 10, numbered_images(50, fill=250), np.arange(50) % 10,
        classes=tuple("0123456789"), natural=False,
    )


@pytest.fixture
def numbered(monkeypatch) -> str:
    # The registry module, not the package: register_dataset and load_dataset look _DATASETS up there.
    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))  # registrations vanish after the test
    register_dataset("numbered")(load_numbered)
    return "numbered"


# --------------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_every_builtin_dataset():
    builtin = {"digits", "synthetic", "mnist", "fashion_mnist", "kmnist", "emnist", "cifar10", "cifar100"}
    assert builtin <= set(list_datasets())


def test_unknown_dataset_error_names_the_available_ones():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*cifar10.*digits"):
        load_dataset("imagenet")


def test_registering_a_taken_name_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits")(load_numbered)


def test_a_registered_loader_is_split_by_load_dataset(numbered):
    splits = load_dataset(numbered)
    assert (splits.name, splits.input_shape, splits.num_classes) == ("numbered", (1, 4, 4), 10)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (180, 20, 50)


# --------------------------------------------------------------------------------------------------
# Splits


def test_split_is_deterministic_under_a_seed_and_changes_with_it(numbered):
    first, again, other = (load_dataset(numbered, seed=seed) for seed in (0, 0, 1))
    assert np.array_equal(image_ids(first.x_val), image_ids(again.x_val))
    assert np.array_equal(image_ids(first.x_train), image_ids(again.x_train))
    assert not np.array_equal(image_ids(first.x_val), image_ids(other.x_val))


def test_train_and_val_partition_the_training_data_and_test_stays_apart(numbered):
    splits = load_dataset(numbered, seed=3)
    train, val = set(image_ids(splits.x_train)), set(image_ids(splits.x_val))
    assert not train & val
    assert train | val == set(range(200))
    assert np.all(splits.x_test[:, 0, 1:, :] == 250)  # only test images are bright
    assert np.all(splits.x_train[:, 0, 1:, :] == 10) and np.all(splits.x_val[:, 0, 1:, :] == 10)


def test_labels_follow_their_images_through_the_split(numbered):
    splits = load_dataset(numbered, seed=5)
    assert np.array_equal(splits.y_train, image_ids(splits.x_train) % 10)
    assert np.array_equal(splits.y_val, image_ids(splits.x_val) % 10)


def test_validation_is_stratified(fashion):
    assert np.bincount(fashion.y_val, minlength=10).tolist() == [600] * 10


def test_subset_keeps_n_training_examples_and_caps_test_in_proportion(numbered):
    splits = load_dataset(numbered, subset=100, val_fraction=0.1)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (90, 10, 25)
    assert np.bincount(splits.y_val).tolist() == [1] * 10


def test_normalisation_stats_come_from_the_train_split_only(numbered):
    splits = load_dataset(numbered)
    train = splits.x_train / 255.0
    assert splits.mean == pytest.approx((train.mean(),))
    assert splits.std == pytest.approx((train.std(),))
    everything = np.concatenate([splits.x_train, splits.x_val, splits.x_test]) / 255.0
    assert everything.mean() > splits.mean[0] + 0.1


def test_splits_are_plain_numpy_and_pickle(digits):
    restored = pickle.loads(pickle.dumps(digits))
    assert all(isinstance(array, np.ndarray) for array in (restored.x_train, restored.y_val, restored.x_test))
    assert np.array_equal(restored.x_train, digits.x_train)
    assert (restored.mean, restored.classes, restored.natural) == (digits.mean, digits.classes, digits.natural)


def test_a_validation_fraction_outside_zero_one_is_refused():
    with pytest.raises(DataError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)


# --------------------------------------------------------------------------------------------------
# File-free datasets


def test_digits_are_uint8_scaled_to_the_full_byte_range(digits):
    assert digits.x_train.dtype == np.uint8 and digits.y_train.dtype == np.int64
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10 and not digits.natural
    assert digits.x_train.max() == 255
    assert len(digits.y_train) + len(digits.y_val) + len(digits.y_test) == 1797


def test_synthetic_is_deterministic_under_its_seed():
    first, again, other = (load_dataset("synthetic", seed=seed) for seed in (0, 0, 1))
    assert np.array_equal(first.x_test, again.x_test)
    assert not np.array_equal(first.x_test, other.x_test)


def test_synthetic_is_learnable_by_nearest_class_mean():
    splits = load_dataset("synthetic")
    flat_train = splits.x_train.reshape(len(splits.x_train), -1).astype(float)
    centroids = np.stack([flat_train[splits.y_train == c].mean(0) for c in range(splits.num_classes)])
    flat_test = splits.x_test.reshape(len(splits.x_test), -1).astype(float)
    predicted = ((flat_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == splits.y_test).mean() > 0.9


# --------------------------------------------------------------------------------------------------
# Real file formats


def test_fashion_mnist_reads_the_official_flat_files(fashion):
    assert fashion.x_train.dtype == np.uint8 and fashion.y_train.dtype == np.int64
    assert fashion.x_train.shape == (54000, 1, 28, 28) and fashion.x_val.shape == (6000, 1, 28, 28)
    assert fashion.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    assert fashion.num_classes == 10 and fashion.classes[0] == "T-shirt/top" and not fashion.natural
    assert 0.25 < fashion.mean[0] < 0.32 and 0.3 < fashion.std[0] < 0.4  # the published 0.286 / 0.353


def test_half_resolution_averages_each_2x2_block():
    images = np.array([[[[0, 2, 10, 10], [4, 255, 10, 11], [7, 7, 0, 0], [7, 7, 0, 1]]]], dtype=np.uint8)
    assert half_resolution(images).tolist() == [[[[65, 10], [7, 0]]]]  # (0+2+4+255)/4 = 65.25; 41/4 -> 10


def test_fashion_mnist_at_14x14_is_the_same_data_at_half_resolution(fashion, fashion_dir):
    half = load_dataset("fashion_mnist_14x14", fashion_dir, seed=0)
    assert half.input_shape == (1, 14, 14) and half.classes == fashion.classes
    assert np.array_equal(half.y_train, fashion.y_train) and np.array_equal(half.y_test, fashion.y_test)
    assert np.array_equal(half.x_test, half_resolution(fashion.x_test))


def test_fashion_mnist_in_torchvision_layout_gives_the_same_data(fashion, fashion_dir, tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / f"{name}.gz").symlink_to(fashion_dir / f"{name}.gz")
    again = load_dataset("fashion-mnist", tmp_path, seed=0)
    assert np.array_equal(again.x_val, fashion.x_val) and np.array_equal(again.y_test, fashion.y_test)


def test_mnist_reads_uncompressed_idx_in_torchvision_layout(tmp_path):
    write_mnist_files(tmp_path / "MNIST" / "raw", suffix="")
    splits = load_dataset("mnist", tmp_path)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (36, 4, 20)
    x_test, y_test = glyphs(20, seed=2)
    assert np.array_equal(splits.x_test[:, 0], x_test) and np.array_equal(splits.y_test, y_test)


def test_kmnist_reads_the_official_npz_files(tmp_path):
    x_train, y_train = glyphs(40, seed=1)
    x_test, y_test = glyphs(20, seed=2)
    arrays = {"train-imgs": x_train, "train-labels": y_train, "test-imgs": x_test, "test-labels": y_test}
    for name, array in arrays.items():
        np.savez_compressed(tmp_path / f"kmnist-{name}.npz", array)
    splits = load_dataset("kmnist", tmp_path)
    assert splits.classes[:2] == ("o", "ki") and splits.y_train.dtype == np.int64
    assert np.array_equal(splits.x_test[:, 0], x_test)


def test_kmnist_reads_idx_files_in_torchvision_layout(tmp_path):
    write_mnist_files(tmp_path / "KMNIST" / "raw")
    assert load_dataset("kmnist", tmp_path).x_test.shape == (20, 1, 28, 28)


def test_emnist_balanced_images_are_turned_upright(tmp_path):
    upright = np.zeros((47, 28, 28), dtype=np.uint8)
    upright[np.arange(47), np.arange(47) % 28, :] = 255  # one horizontal stroke per image
    labels = np.arange(47)
    files = [f"emnist-balanced-{name}.gz" for name in MNIST_FILES]
    for name, array in zip(files, (upright.transpose(0, 2, 1), labels, upright.transpose(0, 2, 1), labels)):
        write_idx(tmp_path / "EMNIST" / "raw" / name, array)
    splits = load_dataset("emnist", tmp_path, val_fraction=0.2)
    assert splits.num_classes == 47 and splits.classes[36] == "a"
    assert np.array_equal(splits.x_test[:, 0], upright)


def test_cifar10_reads_the_python_pickles(cifar10):
    assert cifar10.input_shape == (3, 32, 32) and cifar10.natural
    assert (len(cifar10.y_train), len(cifar10.y_val), len(cifar10.y_test)) == (45, 5, 10)
    assert cifar10.classes == tuple(f"class{c}" for c in range(10))
    assert np.array_equal(cifar10.x_train[0, 0], (np.arange(1024) % 256).reshape(32, 32))
    assert np.all(cifar10.x_train[:, 1] == 100) and np.all(cifar10.x_train[:, 2] == 200)
    assert cifar10.mean[1:] == pytest.approx((100 / 255, 200 / 255))


def test_cifar100_uses_the_fine_labels(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    splits = load_dataset("cifar100", tmp_path, val_fraction=0.5)
    assert splits.num_classes == 100 and splits.classes[99] == "fine99" and splits.natural
    assert sorted(splits.y_test.tolist()) == list(range(100))


# --------------------------------------------------------------------------------------------------
# Errors


def test_missing_root_error_names_the_root_the_files_and_where_it_looked(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        load_dataset("mnist", missing)
    message = str(error.value)
    assert f"data root {missing} does not exist" in message
    assert "train-images-idx3-ubyte" in message and str(missing / "MNIST" / "raw") in message


def test_a_file_dataset_without_a_root_asks_for_one():
    with pytest.raises(DataError, match="--data-root"):
        load_dataset("cifar10")


def test_files_in_an_unexpected_folder_are_reported_with_the_folders_searched(tmp_path):
    write_mnist_files(tmp_path / "downloads" / "fashion")
    with pytest.raises(DataError) as error:
        load_dataset("fashion_mnist", tmp_path)
    message = str(error.value)
    assert "none holds them all" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message and str(tmp_path / "fashion-mnist") in message


def test_a_missing_file_in_an_otherwise_complete_folder_is_reported(tmp_path):
    write_mnist_files(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


def test_kmnist_error_names_both_accepted_formats(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*kmnist-train-imgs.npz"):
        load_dataset("kmnist", tmp_path)


def test_a_truncated_gz_file_is_reported_by_name(tmp_path):
    write_mnist_files(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated or corrupt"):
        load_dataset("mnist", tmp_path)


def test_a_wrong_idx_magic_is_reported(tmp_path):
    write_mnist_files(tmp_path, suffix="")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: wrong IDX magic 1f8b0800"):
        load_dataset("mnist", tmp_path)


def test_an_idx_size_mismatch_is_reported(tmp_path):
    write_mnist_files(tmp_path, suffix="")
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes() + b"extra")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: size mismatch.*\(20, 28, 28\)"):
        load_dataset("mnist", tmp_path)


def test_images_and_labels_of_different_lengths_are_reported(tmp_path):
    write_mnist_files(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39, dtype=np.uint8))
    with pytest.raises(DataError, match=r"images \(40, 28, 28\).*labels \(39,\)"):
        load_dataset("mnist", tmp_path)


def test_a_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "test_batch", {b"data": cifar_rows(10), b"labels": subprocess.Popen})
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR python pickle.*refusing to load .*Popen"):
        load_dataset("cifar10", tmp_path)


def test_a_cifar_batch_without_labels_is_reported(tmp_path):
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "data_batch_3", {b"data": cifar_rows(10)})
    with pytest.raises(DataError, match="data_batch_3: missing key b'labels'"):
        load_dataset("cifar10", tmp_path)


def test_download_without_torchvision_says_so(tmp_path):
    try:
        importlib.import_module("torchvision")
    except Exception:
        pass
    else:
        pytest.skip("torchvision is importable here; a download would go to the network")
    with pytest.raises(DataError, match="download=True needs torchvision"):
        load_dataset("mnist", tmp_path, download=True)


def test_the_data_module_imports_neither_ray_nor_torchvision():
    code = "import sys, spidernet_ray.data; print(sorted({'ray', 'torchvision'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------
# Batches


def test_eval_batches_cover_the_split_once_in_order_and_normalised(digits):
    batches = Batches(digits.x_train, digits.y_train, 100, mean=digits.mean, std=digits.std)
    xs, ys = zip(*batches)
    assert len(batches) == len(xs) == 13 and xs[-1].shape[0] == len(digits.y_train) - 1200
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, torch.from_numpy(digits.y_train))
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4) and x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_shuffled_epochs_differ_but_repeat_under_the_same_seed(digits):
    def two_epochs(seed):
        batches = Batches(digits.x_train, digits.y_train, 64, mean=digits.mean, std=digits.std, shuffle=True, seed=seed)
        return [torch.cat([y for _, y in batches]) for _ in range(2)]

    first, second = two_epochs(seed=1)
    assert not torch.equal(first, second)
    assert torch.equal(first.sort().values, torch.from_numpy(np.sort(digits.y_train)))
    assert all(torch.equal(a, b) for a, b in zip(two_epochs(seed=1), (first, second)))


def test_drop_last_drops_an_incomplete_batch_but_never_every_batch(digits):
    stats = {"mean": digits.mean, "std": digits.std, "drop_last": True}
    assert [len(x) for x, _ in Batches(digits.x_val, digits.y_val, 100, **stats)] == [100]
    assert [len(x) for x, _ in Batches(digits.x_val, digits.y_val, 1000, **stats)] == [len(digits.y_val)]


def test_augmentation_keeps_shape_and_dtype(cifar10):
    stats = {"mean": cifar10.mean, "std": cifar10.std}
    batches = Batches(cifar10.x_train, cifar10.y_train, 16, **stats, crop_padding=4, flip=True, cutout=8)
    x, y = next(iter(batches))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def unaugmented_training_batches(splits, batch_size, seed):
    """What make_loaders' training batches would be without augmentation: same order, same seed."""
    stats = {"mean": splits.mean, "std": splits.std}
    return Batches(splits.x_train, splits.y_train, batch_size, **stats, shuffle=True, drop_last=True, seed=seed)


def test_make_loaders_augments_natural_images(cifar10):
    augmented = make_loaders(cifar10, 16, seed=3).train
    plain = unaugmented_training_batches(cifar10, 16, seed=3)
    (x_augmented, y_augmented), (x_plain, y_plain) = next(iter(augmented)), next(iter(plain))
    assert torch.equal(y_augmented, y_plain)  # same seed, same order ...
    assert not torch.equal(x_augmented, x_plain)  # ... but cropped and flipped
    assert (augmented.crop_padding, augmented.flip) == (4, True)


def test_make_loaders_leaves_digits_unaugmented(digits):
    loaders = make_loaders(digits, 64, seed=3)
    plain = unaugmented_training_batches(digits, 64, seed=3)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(loaders.train, plain))
    assert len(loaders.val) == 3 and len(loaders.test) == 6


def test_random_crop_takes_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (32, 2, 6, 6), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    cropped = random_crop(images, 2, generator)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    windows = [padded[:, :, top : top + 6, left : left + 6] for top in range(5) for left in range(5)]
    matches = torch.stack([(cropped == window).flatten(1).all(1) for window in windows])  # (25, 32)
    assert matches.any(0).all()
    assert matches.any(1).sum() > 5  # offsets vary between images


def test_cutout_zeroes_one_clipped_square_per_image():
    images = torch.ones(64, 3, 10, 10)
    generator = torch.Generator().manual_seed(0)
    zeroed = (cutout(images, 4, generator) == 0).all(1)  # (64, 10, 10): every channel of a pixel goes
    per_image = zeroed.flatten(1).sum(1)
    assert per_image.min() >= 4 and per_image.max() == 16
    rows, cols = zeroed.any(2).sum(1), zeroed.any(1).sum(1)
    assert torch.equal(rows * cols, per_image)  # a rectangle, not scattered pixels
