"""Datasets as whole uint8 tensors on the device, and batched augmentation on the device.

Every split lives on the device as one uint8 NCHW tensor (CIFAR-10's 60,000 images are
184 MB: nothing is gained by streaming them through a DataLoader). A training batch is
shuffled, cropped, flipped (and optionally rotated) with a handful of batched tensor ops,
then converted to float [0, 1] once. Models take float [0, 1] inputs; normalisation, if any,
lives inside the model (ArchSpec.input_mean / input_std).
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from sweeper.errors import ConfigError, DataError

if TYPE_CHECKING:  # attribute access only: importing sweeper.config would pull in the model zoo
    from sweeper.config import DataConfig, TrialConfig

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
DIGITS_SPLIT_SEED = 0  # fixed, so every trial of every seed is tested on the same digits


@dataclass
class Dataset:
    """One dataset on one device: images uint8 NCHW in [0, 255], labels int64."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    holdout_x: torch.Tensor  # carved from the training split; per-epoch history only
    holdout_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per-channel mean of train_x in [0, 1] units (for in-model norm)
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def default_data_dir() -> Path:
    """$SWEEPER_DATA when set, else ./data (relative to the working directory)."""
    return Path(os.environ.get("SWEEPER_DATA") or "data")


def anchor_data_dir(config: TrialConfig, cwd: str) -> TrialConfig:
    """`config` with a relative runtime.data_dir made absolute against `cwd`, the working
    folder of whoever started the run: Ray runs trials and workers in folders of their own."""
    named = config.runtime.data_dir
    if not named or os.path.isabs(named):
        return config
    absolute = os.path.abspath(os.path.join(cwd, named))
    return config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"data_dir": absolute})}
    )


def adopt_data_dir(default: str) -> None:
    """In a Ray worker: make `default` (the driver's default data folder, absolute) this
    process's, unless its node set an absolute $SWEEPER_DATA of its own (a node-local copy).
    Ray runs a trial in a working folder of its own, where ./data means nothing."""
    if not default_data_dir().is_absolute():
        os.environ["SWEEPER_DATA"] = default


def load_dataset(
    cfg: DataConfig,
    *,
    data_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    download: bool = False,
) -> Dataset:
    """Load `cfg.dataset` onto `device`, carve the holdout, apply train_size / test_size.

    The holdout is the last `holdout_size` images of the training split (fixed, whatever the
    seed, so every trial's history is measured on the same images); train_size then takes the
    first N of the rest and test_size the first N of the test split. `seed` only shapes the
    synthetic dataset. `download` fetches CIFAR through torchvision where it imports.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    train_x, train_y, test_x, test_y, num_classes = _splits(cfg, root, seed=seed,
                                                            download=download)  # fmt: skip

    n_train = train_x.shape[0] - cfg.holdout_size
    if n_train < 1:
        raise ConfigError(
            f"{cfg.holdout_size} held-out images leave none of the {train_x.shape[0]} "
            f"{cfg.dataset} training images to train on; lower it",
            key="data.holdout_size",
        )
    for key, size, available in (
        ("data.train_size", cfg.train_size, n_train),
        ("data.test_size", cfg.test_size, test_x.shape[0]),
    ):
        if size is not None and size > available:  # a silently smaller split would mislabel rows
            raise ConfigError(
                f"{size} images asked for, {cfg.dataset} has {available} "
                f"(after the {cfg.holdout_size}-image holdout for training)",
                key=key,
            )
    holdout_x, holdout_y = train_x[n_train:], train_y[n_train:]
    train_x, train_y = train_x[: cfg.train_size or n_train], train_y[: cfg.train_size or n_train]
    test_x, test_y = test_x[: cfg.test_size], test_y[: cfg.test_size]

    device = torch.device(device)
    train_x = train_x.to(device)
    scaled = train_x.float().div_(255)  # statistics over the images a model is trained on
    mean = tuple(scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(scaled.std(dim=(0, 2, 3)).tolist())
    del scaled
    return Dataset(
        name=cfg.dataset,
        train_x=train_x,
        train_y=train_y.to(device),
        holdout_x=holdout_x.to(device),
        holdout_y=holdout_y.to(device),
        test_x=test_x.to(device),
        test_y=test_y.to(device),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


def _splits(
    cfg: DataConfig, root: Path, *, seed: int, download: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The whole dataset: (train images, train labels, test images, test labels, classes)."""
    if cfg.dataset in ("cifar10", "cifar100"):
        return _load_cifar(cfg.dataset, root, download=download)
    if cfg.dataset == "digits":
        return _load_digits(cfg.image_size)
    if cfg.dataset == "synthetic":
        return make_synthetic(
            cfg.synthetic_train,
            cfg.synthetic_test,
            num_classes=cfg.synthetic_classes,
            image_size=cfg.image_size,
            seed=seed,
        )
    # DataConfig's Literal makes this unreachable from a validated config
    raise ValueError(
        f"unknown dataset {cfg.dataset!r}; choose from cifar10, cifar100, digits, synthetic"
    )


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 in the official Python pickle format

_CIFAR = {
    # name: (folder, train files, test files, label key, classes, url, torchvision class)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
        10,
        CIFAR10_URL,
        "CIFAR10",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        b"fine_labels",
        100,
        CIFAR100_URL,
        "CIFAR100",
    ),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only.

    The CIFAR files are pickles; a full unpickler would run any code a tampered download
    carries. These globals are all that numpy arrays need, in both numpy 1 and 2 spelling.
    """

    _ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_cifar(
    name: str, root: Path, *, download: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    folder, train_files, test_files, label_key, num_classes, url, _ = _CIFAR[name]
    where = root / folder
    if not where.is_dir() and download:
        _download_cifar(name, root)
    if not where.is_dir():
        raise DataError(
            f"{name}: no {where}/ (expected the extracted Python version of the dataset); "
            f"download and extract {url} into {root}/, or set runtime.download: true"
        )
    train_x, train_y = _read_cifar_files(where, train_files, label_key, num_classes, url)
    test_x, test_y = _read_cifar_files(where, test_files, label_key, num_classes, url)
    return train_x, train_y, test_x, test_y, num_classes


def check_dataset(dataset: str, root: str | Path | None, *, download: bool = False) -> None:
    """Raise DataError (one line: the folder and the layout expected there) when `dataset`
    cannot be read from `root` (None: the default folder). Looks at names and sizes only, so
    a sweep checks its data in a second, before any trial starts."""
    if dataset not in _CIFAR:
        return  # digits and synthetic need no files
    root = Path(root) if root is not None else default_data_dir()
    folder, train_files, test_files, _, _, url, _ = _CIFAR[dataset]
    where = root / folder
    if download and not where.exists():
        return  # the first trial downloads it
    names = [*train_files, *test_files]
    missing = [n for n in names if not (where / n).is_file() or (where / n).stat().st_size == 0]
    if not missing:
        return
    what = f"no {where}/" if not where.is_dir() else f"{where}/ lacks {', '.join(missing)}"
    raise DataError(
        f"{dataset}: {what}; expected {root}/{folder}/ holding {', '.join(names)} (the "
        f"extracted Python version of {url}), or set runtime.download: true"
    )


def _read_cifar_files(
    where: Path, files: list[str], label_key: bytes, num_classes: int, url: str
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for fname in files:
        path = where / fname
        hint = f"delete {where}/ and extract {url} again (or delete it and set runtime.download)"
        if not path.is_file():
            raise DataError(f"missing {path}: {hint}")
        try:
            with path.open("rb") as f:
                entry = _ArrayUnpickler(f, encoding="bytes").load()
            data = np.asarray(entry[b"data"], dtype=np.uint8)
            labels = np.asarray(entry[label_key], dtype=np.int64)
        except Exception as err:  # truncated, not a pickle, missing keys, wrong types
            raise DataError(f"damaged {path} ({type(err).__name__}: {err}); {hint}") from err
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
            raise DataError(
                f"damaged {path}: data {data.shape} / labels {labels.shape}, expected "
                f"(N, 3072) / (N,); {hint}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"damaged {path}: labels outside 0..{num_classes - 1}; {hint}")
        xs.append(data.reshape(-1, 3, 32, 32))  # rows are R plane, G plane, B plane
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _download_cifar(name: str, root: Path) -> None:
    """Fetch and extract through torchvision's downloader (checks the archive's MD5)."""
    url = _CIFAR[name][5]
    try:
        import torchvision.datasets as tvd  # optional; its PyPI build may not import
    except Exception as err:
        raise DataError(
            f"{name}: --download needs torchvision, which does not import here "
            f"({type(err).__name__}); download and extract {url} into {root}/ instead"
        ) from err
    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(tvd, _CIFAR[name][6])(str(root), train=True, download=True)
    except Exception as err:
        raise DataError(
            f"{name}: download failed ({type(err).__name__}: {err}); "
            f"download and extract {url} into {root}/ by hand"
        ) from err


# ----------------------------------------------------------------------------------------------
# scikit-learn's handwritten digits (ships inside scikit-learn: no download)


def _load_digits(
    image_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # 0..16 -> [0,1]
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear")
    images = images.clamp_(0, 1).mul_(255).round_().to(torch.uint8).expand(-1, 3, -1, -1)
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=0.2,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    # index_select copies, so the expanded (shared-memory) channels become real tensors
    return (
        images[train_idx].contiguous(),
        labels[train_idx],
        images[test_idx].contiguous(),
        labels[test_idx],
        10,
    )


# ----------------------------------------------------------------------------------------------
# Synthetic: learnable, class-conditional images for tests


def make_synthetic(
    n_train: int,
    n_test: int,
    *,
    num_classes: int = 10,
    image_size: int = 32,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Each class is a smooth random colour pattern; an image is its class pattern at a random
    contrast and shift, blended with another class's pattern and pixel noise.

    A tiny CNN learns it in seconds to well above chance but not perfectly, and the class signal
    is small enough per pixel that an 8/255 L-inf attack matters. Deterministic in `seed`.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, 3, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(image_size, image_size), mode="bicubic")
    templates = templates / templates.flatten(1).std(dim=1).view(-1, 1, 1, 1)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        other = (y + torch.randint(1, num_classes, (n,), generator=g)) % num_classes
        contrast = 0.6 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)
        img = contrast * templates[y] + 0.5 * templates[other]
        # a random shift per image (zeros shifted in), so position alone does not give it away
        img = crop_flip(img, pad=max(1, image_size // 8), flip=False, generator=g)
        img = img + 0.6 * torch.randn(img.shape, generator=g)
        x = (0.5 + 0.12 * img).clamp(0, 1).mul(255).round().to(torch.uint8)
        return x, y

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return train_x, train_y, test_x, test_y, num_classes


# ----------------------------------------------------------------------------------------------
# Batches and augmentation, all on the data's device


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is returned as is."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def train_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    augment: bool,
    pad: int = 4,
    rotate_degrees: float = 0.0,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled float [0, 1] batches; the last partial batch is dropped.

    With `augment`: random crop back to the input size from a zero padding of `pad` pixels,
    and a horizontal flip with probability 1/2; then, with `rotate_degrees` > 0, a rotation
    by a uniform angle in [-rotate_degrees, rotate_degrees] (nearest-neighbour, zeros fill
    the corners).
    `generator` must live on x's device; the same seed gives the same epoch.
    """
    n = x.shape[0]
    if n < batch_size:
        # an epoch of zero batches would silently train nothing
        raise ConfigError(
            f"batch size {batch_size} is larger than the {n} training images; lower it "
            "(or raise data.train_size / lower data.holdout_size)",
            key="train.batch_size",
        )
    order = torch.randperm(n, device=x.device, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]
        if augment:
            # Crop and flip on uint8, before the float conversion: a quarter of the bytes moved.
            xb = crop_flip(xb, pad=pad, generator=generator)
        xb = to_float(xb)
        if augment and rotate_degrees > 0:
            xb = rotate(xb, rotate_degrees, generator=generator)
        yield xb, yb


def crop_flip(
    x: torch.Tensor,
    *,
    pad: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample random crop from a zero-padded copy, and random horizontal flip, in one gather.

    Why a gather: each sample's crop is a window at its own offset, so no batched slice can
    express it, and a per-sample loop launches B small kernels. Instead each output pixel's
    position in its (flattened) padded image is computed, and one torch.gather along the
    flattened pixel axis reads them all: a single memory-bound kernel whatever the batch size,
    with the index shared by all channels (an expanded view, no copy). The flip costs nothing:
    it only reverses the column indices of the flipped samples. Measured on one CPU thread for
    512 uint8 32x32 images: 6 ms, against 40 ms for 4-D advanced indexing, 25 ms for slices
    grouped by offset and 19 ms for a per-sample loop (which is far worse on a GPU).
    """
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H) rows of the padded image
    cols = torch.arange(w, device=dev).expand(b, w)  # (B, W)
    if flip:
        flipped = torch.rand(b, device=dev, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    cols = dx[:, None] + cols  # columns of the padded image
    flat = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]  # (B, H, W)
    index = flat.view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)


def rotate(
    x: torch.Tensor, degrees: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate each float image by its own uniform angle in [-degrees, degrees], batched.

    One affine_grid + grid_sample for the whole batch, the batched equivalent of
    torchvision's RandomRotation(degrees) as the reference's CIFAR-100 pipeline uses it
    (core/dataset.py): about the image centre, nearest-neighbour (torchvision's default
    interpolation, so every output pixel is a copy of an input pixel), zeros outside.
    """
    b = x.shape[0]
    angle = (torch.rand(b, device=x.device, generator=generator) * 2 - 1) * math.radians(degrees)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
