"""Common corruptions: the CIFAR-10-C protocol (Hendrycks & Dietterich 2019) on a test split.

15 corruptions x 5 severities; a network's corruption accuracy is the mean of the 75
accuracies. Two sources of corrupted images:

- the published files, when the data folder has them: `CIFAR-10-C/<corruption>.npy` (or
  `CIFAR-100-C/`), 50,000 uint8 HxWx3 images = severities 1..5 of the 10,000 test images in
  order, and `labels.npy`; the first N images of each severity are used;
- otherwise generated from the test split as loaded with `imagecorruptions` (the maintained
  ImageNet-C / CIFAR-10-C corruption code), numpy-seeded per corruption and severity with a
  fixed seed, so every trial sees the same corrupted images. Generated images follow the
  protocol but are not the published files: imagecorruptions uses ImageNet-C's severity
  parameters, not the CIFAR-specific ones of the published CIFAR-10-C.

imagecorruptions needs images of at least 32x32 pixels: smaller ones (digits) are upscaled
(bilinear) to 32x32, corrupted, and scaled back (area averaging) to the network's size.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sweeper.errors import DataError

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
SEVERITIES = (1, 2, 3, 4, 5)
FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
GENERATION_SEED = 0  # fixed: every trial and every seed is scored on the same corrupted images
MIN_SIZE = 32  # imagecorruptions' smallest image side

CorruptedSet = tuple[str, int, torch.Tensor, torch.Tensor]  # corruption, severity, x, y


def corrupted_sets(
    dataset: str, test_x: torch.Tensor, test_y: torch.Tensor, *, n: int, data_dir: Path
) -> tuple[str, Iterator[CorruptedSet]]:
    """(source, iterator over the 75 corrupted copies of the first n test images).

    Images come back uint8 NCHW on the CPU; labels are the files' or the test split's."""
    n = min(n, int(test_x.shape[0]))
    folder = Path(data_dir) / FOLDERS[dataset] if dataset in FOLDERS else None
    if folder is not None and folder.is_dir():
        return f"files:{folder.name}", _from_files(folder, n)
    version = _imagecorruptions().__version__
    source = f"generated:imagecorruptions-{version}:seed={GENERATION_SEED}"
    return source, _generated(test_x[:n].cpu(), test_y[:n].cpu())


def _from_files(folder: Path, n: int) -> Iterator[CorruptedSet]:
    missing = [f"{c}.npy" for c in (*CORRUPTIONS, "labels") if not (folder / f"{c}.npy").is_file()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)} (all 15 corruptions + labels)")
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    per = labels.shape[0] // len(SEVERITIES)  # 10,000 in the published files
    if n > per:
        raise DataError(f"{folder}: {n} images asked for, a severity has {per}")
    for name in CORRUPTIONS:
        images = np.load(folder / f"{name}.npy", mmap_mode="r")
        if images.shape[0] != labels.shape[0] or images.ndim != 4 or images.shape[3] != 3:
            raise DataError(f"{folder / name}.npy: expected {labels.shape[0]} HxWx3 images "
                            f"(as labels.npy), got shape {images.shape}")  # fmt: skip
        for severity in SEVERITIES:
            rows = slice((severity - 1) * per, (severity - 1) * per + n)
            x = torch.from_numpy(np.ascontiguousarray(images[rows])).permute(0, 3, 1, 2)
            y = torch.from_numpy(np.asarray(labels[rows], dtype=np.int64))
            yield name, severity, x.contiguous(), y


def _generated(x: torch.Tensor, y: torch.Tensor) -> Iterator[CorruptedSet]:
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            yield name, severity, corrupt(x, name, severity), y


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = GENERATION_SEED) -> torch.Tensor:
    """uint8 NCHW images (3 channels) corrupted by imagecorruptions; same shape and dtype.

    numpy's global RNG (which imagecorruptions draws from) is seeded from (seed, corruption,
    severity) and restored afterwards."""
    ic = _imagecorruptions()
    size = x.shape[-2:]
    big = x
    if min(size) < MIN_SIZE:
        scale = MIN_SIZE / min(size)
        target = (round(size[0] * scale), round(size[1] * scale))
        big = F.interpolate(x.float(), size=target, mode="bilinear", align_corners=False)
        big = big.round_().clamp_(0, 255).to(torch.uint8)
    images = big.permute(0, 2, 3, 1).numpy()
    state = np.random.get_state()
    np.random.seed([seed, CORRUPTIONS.index(name), severity])
    try:
        out = np.stack([
            np.clip(ic.corrupt(img, corruption_name=name, severity=severity), 0, 255)
            .round().astype(np.uint8)
            for img in images
        ])  # fmt: skip
    finally:
        np.random.set_state(state)
    result = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    if result.shape[-2:] != size:
        result = F.interpolate(result.float(), size=tuple(size), mode="area")
        result = result.round_().clamp_(0, 255).to(torch.uint8)
    return result


# ----------------------------------------------------------------------------------------------
# imagecorruptions 1.1.2 against today's numpy / scikit-image / setuptools


class _NumpyWithFloat_(types.ModuleType):
    """numpy as imagecorruptions sees it: np.float_ (gone in numpy 2) is float64."""

    float_ = np.float64

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _gaussian(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
    """skimage.filters.gaussian without the `multichannel` keyword scikit-image 0.19 removed."""
    from skimage.filters import gaussian

    if multichannel:
        kwargs.setdefault("channel_axis", -1)
    return gaussian(image, *args, **kwargs)


class _SkimageSeeded(types.ModuleType):
    """skimage as imagecorruptions sees it: util.random_noise (impulse noise) draws from a
    generator seeded by numpy's global RNG, which `corrupt` seeds (skimage's own default
    generator is unseeded, so impulse noise was not reproducible)."""

    def __getattr__(self, name: str) -> Any:
        import skimage

        if name == "util":
            return types.SimpleNamespace(random_noise=_random_noise)
        return getattr(skimage, name)


def _random_noise(image: Any, **kwargs: Any) -> Any:
    from skimage.util import random_noise

    kwargs.setdefault("rng", np.random.randint(2**31))
    return random_noise(image, **kwargs)


def _resource_filename(module: str, name: str) -> str:
    """pkg_resources.resource_filename for a module: `name` next to its file."""
    return str(Path(sys.modules[module].__file__).parent / name)


def _imagecorruptions() -> Any:
    """imagecorruptions, imported with patches local to it: its import of pkg_resources
    (absent from setuptools 81 on), np.float_ (fog), scikit-image's removed `multichannel`
    keyword (glass blur), and a seeded generator for skimage's random_noise (impulse
    noise). The corruption code itself is unchanged."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = shim
    import imagecorruptions
    from imagecorruptions import corruptions

    if not isinstance(corruptions.np, _NumpyWithFloat_):
        corruptions.np = _NumpyWithFloat_("numpy")
        corruptions.gaussian = _gaussian
        corruptions.sk = _SkimageSeeded("skimage")
    if not hasattr(imagecorruptions, "__version__"):
        from importlib.metadata import version

        imagecorruptions.__version__ = version("imagecorruptions")
    return imagecorruptions
