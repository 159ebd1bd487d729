"""Datasets: sources, canonical format, checksums, safe reading of mnist.pkl.gz."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from modularity import data as D
from modularity.errors import DataError


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_read_idx_matches_hand_written_file(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte.gz", arr)
    np.testing.assert_array_equal(D._read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)


def test_debian_fashion_layout_is_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    y_tr, y_te = np.array([0, 1, 2, 3, 9]), np.array([4, 5, 6])
    for stem, a in (("train-images-idx3-ubyte", x_tr), ("train-labels-idx1-ubyte", y_tr),
                    ("t10k-images-idx3-ubyte", x_te), ("t10k-labels-idx1-ubyte", y_te)):
        write_idx(tmp_path / f"{stem}.gz", a)
    out = D._from_debian_fashion(tmp_path)
    assert out["x_train"].shape == (5, 1, 28, 28) and out["x_train"].dtype == np.uint8
    np.testing.assert_array_equal(out["x_test"][:, 0], x_te)
    assert out["y_train"].dtype == np.int64 and out["y_train"].tolist() == [0, 1, 2, 3, 9]


def test_missing_debian_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        D._from_debian_fashion(tmp_path / "nope")


def test_mnist_pkl_checksum_is_checked_before_reading(tmp_path: Path) -> None:
    fake = tmp_path / "mnist.pkl.gz"
    with gzip.open(fake, "wb") as f:
        pickle.dump(([np.zeros((1, 784), np.float32), np.zeros(1)],) * 3, f)
    with pytest.raises(DataError, match="checksum mismatch"):
        D.read_mnist_pkl(fake)


class _Evil:
    def __reduce__(self):  # would run a shell command when unpickled by a plain pickle.load
        return (os.system, ("touch /tmp/modularity-pwned",))


def test_restricted_unpickler_refuses_code() -> None:
    import io

    payload = pickle.dumps(_Evil(), protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        D._NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()


def test_restricted_unpickler_rebuilds_arrays() -> None:
    import io

    arr = (np.arange(12, dtype=np.float32) / 256).reshape(3, 4)
    out = D._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps((arr, np.arange(3)), protocol=2)), encoding="latin1").load()
    np.testing.assert_array_equal(out[0], arr)


def test_digits_prepare_is_pinned_and_loads_scaled(tmp_path: Path) -> None:
    D.prepare("digits", tmp_path)
    arrays, manifest = D.load_arrays("digits", tmp_path)
    assert manifest["sha256"] == D.KNOWN_SHA256["digits"]
    assert arrays["x_train"].shape == (1438, 1, 8, 8) and arrays["x_test"].shape == (359, 1, 8, 8)
    ds = D.load_dataset("digits", tmp_path)
    assert ds.n_classes == 10 and ds.x_test.dtype.is_floating_point
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert D.source_of("digits", tmp_path) == "scikit-learn load_digits"


def test_tampered_file_fails_the_checksum(tmp_path: Path) -> None:
    folder = D.prepare("digits", tmp_path)
    x = np.load(folder / "x_test.npy")
    x[0, 0, 0, 0] ^= 1
    np.save(folder / "x_test.npy", x)
    with pytest.raises(DataError, match="checksum mismatch"):
        D.load_dataset("digits", tmp_path)


def test_source_with_wrong_bytes_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = D._from_sklearn_digits()
    bad = {**good, "y_test": good["y_test"][::-1].copy()}
    monkeypatch.setattr(D, "sources", lambda name, raw: [("forged", lambda: bad)])
    with pytest.raises(DataError, match="checksum mismatch for digits from forged: y_test"):
        D.prepare("digits", tmp_path)
    assert not (tmp_path / "datasets" / "digits").exists(), "nothing half-written"


def test_no_working_source_names_every_source_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_a() -> D.Arrays:
        raise OSError("network unreachable")

    def fail_b() -> D.Arrays:
        raise DataError("not installed")

    monkeypatch.setattr(D, "sources", lambda name, raw: [("source A", fail_a), ("source B", fail_b)])
    with pytest.raises(DataError, match=r"no source for dataset 'mnist' worked; tried: source A: OSError: network unreachable; source B"):
        D.prepare("mnist", tmp_path)


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        D.sources("nope", Path("."))


def test_unprepared_dataset_without_prepare(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not prepared"):
        D.load_dataset("digits", tmp_path, prepare_missing=False)


# Real data, prepared by `make data` (part of `make test`'s set-up).


@pytest.mark.parametrize("name,first_labels,train_mean", [
    ("mnist", [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], 33.318),
    ("fashion", [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], 72.940),
])
def test_real_datasets_are_the_canonical_ones(name: str, first_labels: list[int], train_mean: float) -> None:
    arrays, manifest = D.load_arrays(name, prepare_missing=True)
    assert manifest["sha256"] == D.KNOWN_SHA256[name]
    assert arrays["x_train"].shape == (60000, 1, 28, 28) and arrays["x_test"].shape == (10000, 1, 28, 28)
    assert arrays["y_train"][:10].tolist() == first_labels
    assert np.bincount(arrays["y_test"]).tolist() == ([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
                                                      if name == "mnist" else [1000] * 10)
    assert abs(arrays["x_train"].mean() - train_mean) < 1e-3


def test_imagenet_subset_loader(tmp_path: Path) -> None:
    from PIL import Image

    for wnid in ("n01", "n02"):
        (tmp_path / wnid).mkdir()
        for i in range(3):
            Image.new("RGB", (300, 260), color=(i * 40, 10, 200)).save(tmp_path / wnid / f"img{i}.JPEG")
    x, y = D.load_imagenet_subset(tmp_path, n_per_class=2)
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="fewer than n_per_class"):
        D.load_imagenet_subset(tmp_path, n_per_class=5)
    with pytest.raises(DataError, match="not found"):
        D.load_imagenet_subset(tmp_path / "missing")
