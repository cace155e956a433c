"""sweeper.data: CIFAR pickles (tiny files in the real format), digits, synthetic, augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import synthetic_config

from sweeper.config import DataConfig
from sweeper.data import (
    CIFAR10_URL,
    CIFAR100_URL,
    crop_flip,
    load_dataset,
    make_synthetic,
    rotate,
    to_float,
    train_batches,
)
from sweeper.errors import ConfigError, DataError

# ---------------------------------------------------------------------------- tiny CIFAR files


def _images(n: int, start: int) -> np.ndarray:
    """n CIFAR rows (3072 uint8: R plane, G plane, B plane) whose pixel (c, r, col) encodes
    the image number, so a wrong reshape or order shows up."""
    rows = np.zeros((n, 3072), dtype=np.uint8)
    for i in range(n):
        img = np.zeros((3, 32, 32), dtype=np.uint8)
        img[0, 0, 0] = start + i  # image id
        img[1, 2, 5] = 200  # a fixed marker in the green plane, row 2, column 5
        img[2, 31, 30] = 7
        rows[i] = img.reshape(-1)
    return rows


def _dump(path: Path, entry: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(entry, f, protocol=2)  # the official files are protocol-2 pickles


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        ids = range(b * per_batch, (b + 1) * per_batch)
        _dump(
            folder / f"data_batch_{b + 1}",
            {
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": [i % 10 for i in ids],
                b"data": _images(per_batch, b * per_batch),
                b"filenames": [f"img{i}.png".encode() for i in ids],
            },
        )
    _dump(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [(i + 3) % 10 for i in range(n_test)],
            b"data": _images(n_test, 100),
            b"filenames": [f"t{i}.png".encode() for i in range(n_test)],
        },
    )


def write_cifar100(root: Path, n_train: int = 20, n_test: int = 6) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, start in (("train", n_train, 0), ("test", n_test, 100)):
        _dump(
            folder / name,
            {
                b"filenames": [f"{i}.png".encode() for i in range(n)],
                b"batch_label": name.encode(),
                b"fine_labels": [(start + 7 * i) % 100 for i in range(n)],
                b"coarse_labels": [i % 20 for i in range(n)],
                b"data": _images(n, start),
            },
        )


def test_cifar10_pickles_load_in_order_with_holdout_and_sizes(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    cfg = DataConfig(dataset="cifar10", holdout_size=5)
    data = load_dataset(cfg, data_dir=tmp_path, device="cpu", seed=0)
    assert data.name == "cifar10" and data.num_classes == 10
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert data.train_x.shape == (25, 3, 32, 32) and data.holdout_x.shape == (5, 3, 32, 32)
    assert data.test_x.shape == (4, 3, 32, 32)
    # batches concatenated in order; the holdout is the last 5 training images
    assert data.train_x[:, 0, 0, 0].tolist() == list(range(25))
    assert data.holdout_x[:, 0, 0, 0].tolist() == list(range(25, 30))
    assert data.train_y.tolist() == [i % 10 for i in range(25)]
    assert data.holdout_y.tolist() == [i % 10 for i in range(25, 30)]
    # CHW layout of the rows: plane, then row, then column
    assert (data.train_x[:, 1, 2, 5] == 200).all() and (data.test_x[:, 2, 31, 30] == 7).all()
    assert data.test_x[:, 0, 0, 0].tolist() == [100, 101, 102, 103]
    assert data.test_y.tolist() == [3, 4, 5, 6]
    assert len(data.mean) == 3 and len(data.std) == 3

    small = load_dataset(
        DataConfig(dataset="cifar10", holdout_size=5, train_size=7, test_size=2),
        data_dir=str(tmp_path),
        device="cpu",
        seed=3,
    )
    assert small.train_x[:, 0, 0, 0].tolist() == list(range(7))
    assert small.test_y.tolist() == [3, 4]
    assert torch.equal(small.holdout_x, data.holdout_x)  # the holdout does not move


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    data = load_dataset(DataConfig(dataset="cifar100", holdout_size=4), data_dir=tmp_path, seed=0)
    assert data.num_classes == 100
    assert data.train_x.shape == (16, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.train_y.tolist() == [(7 * i) % 100 for i in range(16)]
    assert data.test_y.tolist() == [(100 + 7 * i) % 100 for i in range(6)]


def test_data_dir_defaults_to_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path)
    monkeypatch.setenv("SWEEPER_DATA", str(tmp_path))
    data = load_dataset(DataConfig(dataset="cifar10", holdout_size=0), data_dir=None, seed=0)
    assert data.train_x.shape[0] == 30 and data.holdout_x.shape[0] == 0


@pytest.mark.parametrize(
    ("name", "folder", "url"),
    [
        ("cifar10", "cifar-10-batches-py", CIFAR10_URL),
        ("cifar100", "cifar-100-python", CIFAR100_URL),
    ],
)
def test_missing_dataset_says_where_and_how(
    tmp_path: Path, name: str, folder: str, url: str
) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(dataset=name), data_dir=tmp_path, seed=0)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / folder) in msg and url in msg and "runtime.download" in msg


def test_missing_batch_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing .*data_batch_3.*extract"):
        load_dataset(DataConfig(dataset="cifar10", holdout_size=0), data_dir=tmp_path, seed=0)


def test_truncated_file_is_damaged(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=f"damaged {path}.*{CIFAR10_URL}"):
        load_dataset(DataConfig(dataset="cifar10", holdout_size=0), data_dir=tmp_path, seed=0)


@pytest.mark.parametrize(
    "entry",
    [
        {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]},  # wrong row length
        {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]},  # label count
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},  # label out of range
        {b"pixels": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]},  # missing key
        [1, 2, 3],  # not a dict
    ],
)
def test_wrong_content_is_damaged(tmp_path: Path, entry: object) -> None:
    write_cifar10(tmp_path)
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_2", entry)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="damaged .*data_batch_2"):
        load_dataset(DataConfig(dataset="cifar10", holdout_size=0), data_dir=tmp_path, seed=0)


class _Payload:
    """Unpickling this would create a file: the loader must refuse arbitrary globals."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_1", {b"data": _Payload(marker)})
    with pytest.raises(DataError, match="damaged .*refusing"):
        load_dataset(DataConfig(dataset="cifar10", holdout_size=0), data_dir=tmp_path, seed=0)
    assert not marker.exists()


def test_download_without_torchvision_is_a_data_error(tmp_path: Path) -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision imports here; a download would reach the network")
    with pytest.raises(DataError, match=f"torchvision.*{CIFAR10_URL}"):
        load_dataset(DataConfig(dataset="cifar10"), data_dir=tmp_path, seed=0, download=True)


def test_sizes_larger_than_the_splits(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(ConfigError, match="data.holdout_size: 30 held-out images leave none"):
        load_dataset(DataConfig(dataset="cifar10", holdout_size=30), data_dir=tmp_path, seed=0)
    with pytest.raises(ConfigError, match="data.train_size: 26 images asked for, cifar10 has 25"):
        cfg = DataConfig(dataset="cifar10", holdout_size=5, train_size=26)
        load_dataset(cfg, data_dir=tmp_path, seed=0)
    with pytest.raises(ConfigError, match="data.test_size: 5 images asked for, cifar10 has 4"):
        load_dataset(DataConfig(dataset="cifar10", holdout_size=0, test_size=5), data_dir=tmp_path)


# ---------------------------------------------------------------------------- digits, synthetic


def test_digits_resized_grey_to_rgb_with_fixed_stratified_split() -> None:
    cfg = DataConfig(dataset="digits", holdout_size=100)
    a = load_dataset(cfg, data_dir=None, device="cpu", seed=0)
    b = load_dataset(cfg, data_dir=None, device="cpu", seed=1)
    assert a.num_classes == 10
    assert a.train_x.shape == (1337, 3, 32, 32) and a.holdout_x.shape == (100, 3, 32, 32)
    assert a.test_x.shape == (360, 3, 32, 32) and a.train_x.dtype == torch.uint8
    assert int(a.train_x.max()) > 200 and int(a.train_x.min()) == 0  # the full range is used
    assert torch.equal(a.train_x[:, 0], a.train_x[:, 2])  # grey in three channels
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)  # seed-free
    counts = torch.bincount(a.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: about 36 per class
    small = load_dataset(DataConfig(dataset="digits", image_size=8, holdout_size=0), seed=0)
    assert small.train_x.shape == (1437, 3, 8, 8)


def test_synthetic_is_deterministic_in_seed_and_balanced() -> None:
    cfg = synthetic_config()
    a = load_dataset(cfg, data_dir=None, device="cpu", seed=0)
    b = load_dataset(cfg, data_dir=None, device="cpu", seed=0)
    c = load_dataset(cfg, data_dir=None, device="cpu", seed=1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.train_x.shape == (1400, 3, 16, 16) and a.test_x.shape == (300, 3, 16, 16)
    assert torch.bincount(a.train_y, minlength=10).min() > 100
    # not saturated: the images use the range without piling up at 0 or 255
    sat = ((a.train_x == 0) | (a.train_x == 255)).float().mean().item()
    assert sat < 0.02
    x, y, *_ = make_synthetic(5, 5, num_classes=3, image_size=4, seed=0)
    assert x.shape == (5, 3, 4, 4) and int(y.max()) < 3


# ---------------------------------------------------------------------------- batches, augmentation


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_train_batches_without_augmentation_is_a_permutation() -> None:
    x = torch.arange(10 * 3 * 4 * 4, dtype=torch.int64).reshape(10, 3, 4, 4).to(torch.uint8)
    y = torch.arange(10)
    batches = list(train_batches(x, y, 3, augment=False, generator=_gen(0)))
    assert len(batches) == 3  # the last partial batch (1 image) is dropped
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    assert xs.dtype == torch.float32 and len(set(ys.tolist())) == 9
    assert torch.equal(xs, to_float(x[ys]))  # each image still carries its own label
    with pytest.raises(ConfigError, match="train.batch_size: batch size 11 is larger"):
        next(train_batches(x, y, 11, augment=False))


def test_train_batches_reproducible_by_seed() -> None:
    data = load_dataset(synthetic_config(), data_dir=None, device="cpu", seed=0)

    def epoch(seed: int) -> list[torch.Tensor]:
        kw = dict(augment=True, rotate_degrees=20.0, generator=_gen(seed))
        return [xb for xb, _ in train_batches(data.train_x, data.train_y, 128, **kw)]

    a, b, c = epoch(5), epoch(5), epoch(6)
    assert len(a) == 1400 // 128
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert all(xb.shape == (128, 3, 16, 16) for xb in a)
    assert all(0 <= float(xb.min()) and float(xb.max()) <= 1 for xb in a)


def test_flip_really_flips() -> None:
    x = torch.randint(0, 256, (64, 3, 5, 7), dtype=torch.uint8)
    out = crop_flip(x, pad=0, generator=_gen(0))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert bool((same | flipped).all())
    assert 10 < int(flipped.sum()) < 54  # about half, with this seed


def test_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    x = torch.randint(1, 256, (40, 2, 6, 6), dtype=torch.uint8)  # no zeros: padding shows
    pad = 2
    out = crop_flip(x, pad=pad, generator=_gen(1))
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    shifts = set()
    for i in range(len(x)):
        found = [
            (dy, dx, f)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for f in (False, True)
            if torch.equal(
                out[i], (padded[i].flip(2) if f else padded[i])[:, dy : dy + 6, dx : dx + 6]
            )
        ]
        assert found, f"sample {i} is not a crop (+flip) of its padded input"
        shifts.add(found[0][:2])
    assert len(shifts) > 10  # offsets really vary per sample
    assert (pad, pad) in shifts or len(shifts) > 15


def test_crop_moves_content() -> None:
    x = torch.zeros(200, 1, 8, 8)
    x[:, :, 3, 3] = 1.0  # one bright pixel
    out = crop_flip(x, pad=4, flip=False, generator=_gen(2))
    rows = out.sum(dim=(1, 3)).argmax(dim=1)
    kept = out.flatten(1).sum(1)
    assert len(set(rows[kept > 0].tolist())) >= 6  # the pixel lands on many rows
    assert (kept == 0).any()  # and is sometimes cropped away


def test_rotate() -> None:
    x = torch.rand(8, 3, 12, 12)
    assert torch.allclose(rotate(x, 0.0, generator=_gen(0)), x, atol=1e-5)
    out = rotate(x, 30.0, generator=_gen(0))
    assert out.shape == x.shape and not torch.allclose(out, x, atol=1e-2)
    # the centre pixel of an odd-sized image stays put under any rotation
    y = torch.rand(4, 1, 9, 9)
    assert torch.allclose(rotate(y, 45.0, generator=_gen(3))[:, :, 4, 4], y[:, :, 4, 4], atol=1e-5)


def test_rotate_is_nearest_neighbour_as_torchvision_default() -> None:
    """RandomRotation's default interpolation (the reference's CIFAR-100 pipeline) is NEAREST:
    every pixel of the output is a pixel of the same image and channel, or a zero corner."""
    x = torch.rand(16, 3, 32, 32) + 0.5  # no zeros of its own
    out = rotate(x, 20.0, generator=_gen(1))
    for img, src in zip(out, x):
        for ch, src_ch in zip(img, src):
            assert torch.isin(ch[ch != 0], src_ch).all()
    assert 0 < (out == 0).sum() < out.numel() / 4  # rotated: some corners fall outside
