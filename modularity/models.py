"""The paper's networks, the tag registry, and checkpoint save/load.

Architectures follow docs/methods.md §1.2 (Keras reference rebuilt in PyTorch):

* ``MLP``: 784-256-256-256-256-10, ReLU, optional Dropout(0.5) after each hidden layer (the POLY
  regression tags: 2-256x4-512, linear outputs, :data:`REGRESSION_OUTPUTS`).
* ``SmallCNN``: conv64-conv64-pool-conv64-pool-fc128-fc10 (3x3, same padding), optional dropout
  (0.25 after each conv block, 0.5 after fc128).
* ``CifarVGG``: 13 convs (64,64 | 128,128 | 256x3 | 512x3 | 512x3); each conv+ReLU is followed by
  [max-pool] then BatchNorm (eps 1e-3 as in Keras); head fc512-BN-fc512-fc10; the dropout variant adds
  the geifmany dropouts, the control has none.

Every model is a flat ``nn.Sequential`` with named children (``fc1``, ``relu1``, ``conv3``, ...), so
that ``modularity.layers`` can address units by module name. Kernels are Glorot-uniform and biases
zero, as Keras does. ImageNet models come from torchvision.
"""

from __future__ import annotations

import json
import pickle
import platform
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .cluster_gradient import EigengapTerm
from .errors import CheckpointError, UnsupportedModelError
from .utils import atomic_path, write_json_atomic

Family = Literal["mlp", "cnn", "vgg", "imagenet"]

# --------------------------------------------------------------------------------------------------
# Architectures


class MLP(nn.Sequential):
    """Fully connected ReLU network; ``hidden`` widths, optional dropout after each hidden layer."""

    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (256, 256, 256, 256),
                 n_classes: int = 10, dropout: float = 0.0) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        width = in_features
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"relu{i}"] = nn.ReLU()
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            width = h
        layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, n_classes)
        super().__init__(layers)
        self.in_features, self.hidden, self.n_classes = in_features, tuple(hidden), n_classes


class SmallCNN(nn.Sequential):
    """The reference's small CNN (Keras ``cifar10_cnn`` example, three 64-channel convs)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, n_classes: int = 10,
                 dropout: bool = False, width: int = 64, dense: int = 128) -> None:
        d: OrderedDict[str, nn.Module] = OrderedDict()
        d["conv1"] = nn.Conv2d(in_channels, width, 3, padding=1)
        d["relu1"] = nn.ReLU()
        d["conv2"] = nn.Conv2d(width, width, 3, padding=1)
        d["relu2"] = nn.ReLU()
        d["pool1"] = nn.MaxPool2d(2)
        if dropout:
            d["drop1"] = nn.Dropout(0.25)
        d["conv3"] = nn.Conv2d(width, width, 3, padding=1)
        d["relu3"] = nn.ReLU()
        d["pool2"] = nn.MaxPool2d(2)
        if dropout:
            d["drop2"] = nn.Dropout(0.25)
        d["flatten"] = nn.Flatten()
        side = image_size // 4
        d["fc1"] = nn.Linear(width * side * side, dense)
        d["relu_fc1"] = nn.ReLU()
        if dropout:
            d["drop_fc1"] = nn.Dropout(0.5)
        d["fc2"] = nn.Linear(dense, n_classes)
        super().__init__(d)
        self.in_channels, self.image_size, self.n_classes = in_channels, image_size, n_classes


VGG_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG_POOL_AFTER = frozenset({2, 4, 7, 10, 13})
VGG_DROPOUT = {1: 0.3, 3: 0.4, 5: 0.4, 6: 0.4, 8: 0.4, 9: 0.4, 11: 0.4, 12: 0.4, 13: 0.5}


class CifarVGG(nn.Sequential):
    """The reference's 13-conv VGG for 32x32 CIFAR-10: conv+ReLU, [pool], BatchNorm, [dropout]."""

    def __init__(self, in_channels: int = 3, n_classes: int = 10, dropout: bool = False,
                 widths: tuple[int, ...] = VGG_WIDTHS) -> None:
        d: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for i, w in enumerate(widths, start=1):
            d[f"conv{i}"] = nn.Conv2d(c_in, w, 3, padding=1)
            d[f"relu{i}"] = nn.ReLU()
            if i in VGG_POOL_AFTER:
                d[f"pool{i}"] = nn.MaxPool2d(2)
            d[f"bn{i}"] = nn.BatchNorm2d(w, eps=1e-3, momentum=0.01)
            if dropout and i in VGG_DROPOUT:
                d[f"drop{i}"] = nn.Dropout(VGG_DROPOUT[i])
            c_in = w
        d["flatten"] = nn.Flatten()
        d["fc1"] = nn.Linear(c_in, 512)
        d["relu_fc1"] = nn.ReLU()
        d["bn_fc1"] = nn.BatchNorm1d(512, eps=1e-3, momentum=0.01)
        if dropout:
            d["drop_fc1"] = nn.Dropout(0.5)
        d["fc2"] = nn.Linear(512, 512)
        d["relu_fc2"] = nn.ReLU()
        d["fc3"] = nn.Linear(512, n_classes)
        super().__init__(d)
        self.in_channels, self.n_classes = in_channels, n_classes


IMAGENET_ARCHS = ("vgg16", "vgg19", "resnet18", "resnet34", "resnet50")


def imagenet_model(name: str, pretrained: bool = False) -> nn.Module:
    """A torchvision ImageNet model; ``pretrained`` downloads the default weights (needs network)."""
    import torchvision

    if name not in IMAGENET_ARCHS:
        raise UnsupportedModelError(f"unknown ImageNet model {name!r}; known: {', '.join(IMAGENET_ARCHS)}")
    weights = "DEFAULT" if pretrained else None
    try:
        return getattr(torchvision.models, name)(weights=weights)
    except (OSError, RuntimeError) as exc:  # urllib errors are OSErrors
        raise UnsupportedModelError(f"cannot download pretrained weights for {name}: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Tags (docs/methods.md §1.5)


@dataclass(frozen=True)
class TagSpec:
    """Everything that defines a trained network of the paper: architecture, data, training recipe."""

    tag: str
    family: Family
    dataset: str
    dropout: bool = False
    l1: float = 0.0
    l2: float = 0.0
    mod_init: bool = False
    epochs: int = 20
    pruning_epochs: int = 20
    batch_size: int = 128
    augment: bool = False
    paper: bool = True  # False for the project's own quick tags (DIGITS)
    hidden: tuple[int, ...] | None = None  # MLP hidden widths; None = the paper's 256 x 4
    cluster_gradient: EigengapTerm | None = None  # the eigengap loss term + NormalizeWeights (cluster_gradient.py)

    def with_overrides(self, **kw: Any) -> TagSpec:
        return replace(self, **kw)


def _variants(prefix: str, family: Family, dataset: str, l2: float, **kw: Any) -> dict[str, TagSpec]:
    out = {
        prefix: TagSpec(prefix, family, dataset, **kw),
        f"{prefix}+DROPOUT": TagSpec(f"{prefix}+DROPOUT", family, dataset, dropout=True, **kw),
        f"{prefix}+L1REG": TagSpec(f"{prefix}+L1REG", family, dataset, l1=5e-5, **kw),
        f"{prefix}+L2REG": TagSpec(f"{prefix}+L2REG", family, dataset, l2=l2, **kw),
        f"{prefix}+MOD-INIT": TagSpec(f"{prefix}+MOD-INIT", family, dataset, mod_init=True, **kw),
    }
    return out


def _build_tags() -> dict[str, TagSpec]:
    tags: dict[str, TagSpec] = {}
    for ds, name in (("mnist", "MNIST"), ("fashion", "FASHION")):
        tags.update(_variants(name, "mlp", ds, 5e-5, epochs=20, pruning_epochs=20, batch_size=128))
        tags.update(_variants(f"CNN-{name}", "cnn", ds, 5e-5, epochs=10, pruning_epochs=10, batch_size=64))
    # The reference's +LUCID networks (docs/methods.md §1.3, §9.9): column-scrambled 3-channel MNIST, the
    # MLPs trained 30 + 20 epochs; "-REPLICATED" (not in the paper) uses true channel replication.
    for ds, suffix, paper in (("mnist-lucid", "", True), ("mnist-lucid-replicated", "-REPLICATED", False)):
        for drop, name in ((False, "MNIST"), (True, "MNIST+DROPOUT")):
            tag = f"{name}+LUCID{suffix}"
            tags[tag] = TagSpec(tag, "mlp", ds, dropout=drop, epochs=30, pruning_epochs=20, batch_size=128, paper=paper)
            tags[f"CNN-{tag}"] = TagSpec(f"CNN-{tag}", "cnn", ds, dropout=drop, epochs=10, pruning_epochs=10,
                                         batch_size=64, paper=paper)
    # Two-image datasets (docs/methods.md §1.1): HALVES MLPs, STACKED small CNNs, "-SAME" = same-class pairs.
    for ds, name in (("mnist", "MNIST"), ("fashion", "FASHION")):
        for same in ("", "-SAME"):
            tags[f"HALVES{same}-{name}"] = TagSpec(f"HALVES{same}-{name}", "mlp", f"halves{same.lower()}-{ds}",
                                                   epochs=20, pruning_epochs=20, batch_size=128)
            tags[f"CNN-STACKED{same}-{name}"] = TagSpec(f"CNN-STACKED{same}-{name}", "cnn",
                                                        f"stacked{same.lower()}-{ds}", epochs=10, pruning_epochs=10,
                                                        batch_size=64)
    # The small MLP on 7x7 MNIST (docs/methods.md §1.8): 49-64-64-64-10, 10 + 10 epochs; the
    # +CLUSTERABILITY-GRADIENT variant trains with the eigengap term and the per-batch NormalizeWeights.
    small: dict[str, Any] = dict(hidden=(64, 64, 64), epochs=10, pruning_epochs=10, batch_size=128)
    tags["SMALL-MNIST"] = TagSpec("SMALL-MNIST", "mlp", "small-mnist", **small)
    tags["SMALL-MNIST+CLUSTERABILITY-GRADIENT"] = TagSpec("SMALL-MNIST+CLUSTERABILITY-GRADIENT", "mlp", "small-mnist",
                                                          cluster_gradient=EigengapTerm(), **small)
    # The reference's regression MLPs (docs/methods.md §10): 2 -> 256x4 -> 512 linear outputs, MSE, no dropout.
    for name, reg in (("POLY", {}), ("POLY+L1REG", {"l1": 5e-5}), ("POLY+L2REG", {"l2": 5e-5})):
        tags[name] = TagSpec(name, "mlp", "poly", epochs=20, pruning_epochs=20, batch_size=128, **reg)
    vgg = dict(epochs=200, pruning_epochs=50, batch_size=128, augment=True)
    tags.update(_variants("CNN-VGG-CIFAR10", "vgg", "cifar10", 5e-4, **vgg))
    tags["CNN-VGG-CIFAR10+DROPOUT+L2REG"] = TagSpec("CNN-VGG-CIFAR10+DROPOUT+L2REG", "vgg", "cifar10",
                                                    dropout=True, l2=5e-4, **vgg)
    # The project's own quick tags on scikit-learn's embedded digits (8x8): not in the paper.
    tags["DIGITS"] = TagSpec("DIGITS", "mlp", "digits", epochs=20, pruning_epochs=20, batch_size=64, paper=False)
    tags["CNN-DIGITS"] = TagSpec("CNN-DIGITS", "cnn", "digits", epochs=10, pruning_epochs=10, batch_size=64,
                                 paper=False)
    for arch in IMAGENET_ARCHS:
        tags[arch] = TagSpec(arch, "imagenet", "imagenet", epochs=0, pruning_epochs=0)
    return tags


TAGS: dict[str, TagSpec] = _build_tags()

DATASET_SHAPES: dict[str, tuple[int, int, int]] = {  # (channels, height, width)
    "mnist": (1, 28, 28), "fashion": (1, 28, 28), "digits": (1, 8, 8), "cifar10": (3, 32, 32),
    "mnist-lucid": (3, 28, 28), "mnist-lucid-replicated": (3, 28, 28),
    **{f"halves{s}-{d}": (1, 28, 28) for s in ("", "-same") for d in ("mnist", "fashion")},
    **{f"stacked{s}-{d}": (2, 28, 28) for s in ("", "-same") for d in ("mnist", "fashion")},
    "imagenet": (3, 224, 224),
    "small-mnist": (1, 7, 7),
    "poly": (1, 1, 2),  # two real inputs (modularity.poly); the MLP flattens them
}

#: Datasets with float regression targets (N, outputs): MSE loss, regression lesion test (modularity.poly).
REGRESSION_OUTPUTS: dict[str, int] = {"poly": 512}


def is_regression(spec: TagSpec) -> bool:
    """Whether a tag's network is a regression network (POLY): linear outputs trained with MSE."""
    return spec.dataset in REGRESSION_OUTPUTS


def tag_spec(tag: str) -> TagSpec:
    """Look up a tag; unknown tags raise with the list of known ones."""
    try:
        return TAGS[tag]
    except KeyError:
        raise UnsupportedModelError(f"unknown tag {tag!r}; known tags: {', '.join(TAGS)}") from None


def build_model(tag: str | TagSpec, pretrained: bool = False) -> nn.Module:
    """A freshly initialised network for a tag (Glorot-uniform kernels, zero biases, no MOD-INIT)."""
    spec = tag_spec(tag) if isinstance(tag, str) else tag
    if spec.family == "imagenet":
        return imagenet_model(spec.tag, pretrained=pretrained)
    c, h, w = DATASET_SHAPES[spec.dataset]
    if spec.family == "mlp":
        widths = {} if spec.hidden is None else {"hidden": spec.hidden}
        model: nn.Module = MLP(in_features=c * h * w, n_classes=REGRESSION_OUTPUTS.get(spec.dataset, 10),
                               dropout=0.5 if spec.dropout else 0.0, **widths)
    elif spec.family == "cnn":
        model = SmallCNN(in_channels=c, image_size=h, dropout=spec.dropout)
    elif spec.family == "vgg":
        model = CifarVGG(in_channels=c, dropout=spec.dropout)
    else:  # pragma: no cover - TagSpec.family is a Literal
        raise UnsupportedModelError(f"unknown family {spec.family!r}")
    glorot_init(model)
    return model


def glorot_init(model: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels and zero biases on every Linear and Conv2d."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def apply_mod_init(model: nn.Module, generator: torch.Generator, n_modules: int = 10) -> None:
    """The reference's clusterable ("MOD-INIT") initialisation (docs/methods.md §1.3).

    Every unit gets a random module; within-module weights are scaled up, others down, so that the
    expected scale is 1. The first weight matrix (or first conv) is left as it is; MLP output unit i
    gets module i; CNN dense layers are unchanged.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if convs:
        up, down, mats = 1 + (1 - 0.8) * (n_modules - 1), 0.8, convs
    else:
        up, down, mats = 1 + (1 - 0.6) * (n_modules - 1), 0.6, linears
    modules_of = [torch.randint(n_modules, (mats[0].weight.shape[0],), generator=generator)]
    for i, m in enumerate(mats[1:], start=1):
        out = m.weight.shape[0]
        if not convs and i == len(mats) - 1:
            mod_out = torch.arange(out) % n_modules
        else:
            mod_out = torch.randint(n_modules, (out,), generator=generator)
        same = mod_out[:, None] == modules_of[-1][None, :]  # (out, in)
        scale = torch.where(same, up, down).to(m.weight.dtype)
        with torch.no_grad():
            m.weight.mul_(scale.view(*scale.shape, *([1] * (m.weight.dim() - 2))))
        modules_of.append(mod_out)


# --------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_path(root: str | Path, tag: str, seed: int, pruned: bool) -> Path:
    """Canonical location: ``<root>/<TAG>/seed<seed>/{pruned,unpruned}.pt`` (+ ``.json`` metadata)."""
    return Path(root) / tag / f"seed{seed}" / ("pruned.pt" if pruned else "unpruned.pt")


def versions() -> dict[str, str]:
    import numpy
    import sklearn

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "sklearn": sklearn.__version__}


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``path`` (state_dict) and ``path.with_suffix('.json')`` (metadata), each atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:  # through a file object: the archive's records are then named "archive/...", not after the
            with open(tmp, "wb") as f:  # random temporary name, so the same weights give the same bytes
                torch.save(model.state_dict(), f)
        except RuntimeError as exc:  # torch's zip writer reports a full disk as "[enforce fail ...] unexpected pos"
            import shutil

            free = shutil.disk_usage(tmp.parent).free
            raise CheckpointError(f"cannot write checkpoint {path}: torch.save failed ({' '.join(str(exc).split())[:120]}); "
                                  f"{free} bytes free on its file system (is the disk full?)") from None
    write_json_atomic(path.with_suffix(".json"), {**meta, "versions": versions()})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`: (model in eval mode, metadata).

    The state dict is read with ``weights_only=True``; a missing file, unreadable data or weights that
    do not fit the tag's architecture raise :class:`CheckpointError` with a one-line message, and so
    do non-finite weights (NaN or +-inf in any parameter or buffer, named with their count): no
    analysis of such a network means anything (:mod:`modularity.validate`).
    """
    from . import validate

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata not found: {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint metadata {meta_path}: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint metadata {meta_path}: {exc.strerror or exc}") from None
    validate.checkpoint_meta(meta, str(meta_path))
    model = build_model(meta["tag"])
    state = _read_state_dict(path, map_location)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"checkpoint {path} does not match tag {meta['tag']!r}: {first}") from None
    validate.finite_model(model, where=f"checkpoint {path}")
    model.eval()
    return model, meta


def _read_state_dict(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with every failure as one :class:`CheckpointError` line."""
    from .validate import first_line

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(f"corrupt checkpoint {path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        # torch's weights_only message starts with a hint ("re-running with weights_only=False will likely
        # succeed") that is wrong for files that are not checkpoints and unsafe for files that carry code.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        blocked = next((ln for ln in lines if "Unsupported global" in ln), None)
        if blocked is not None:
            cause = f"it holds Python objects other than tensors ({blocked[:200]}); not loaded, nothing was run"
        elif not zipfile.is_zipfile(path):
            cause = "not a torch checkpoint (no zip archive: random or foreign bytes, or a legacy pickle)"
        else:
            cause = next((ln for ln in lines if "nsupported" in ln), lines[0] if lines else "unpickling failed")[:200]
        raise CheckpointError(f"corrupt checkpoint {path}: refused by torch.load(weights_only=True): {cause}") from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"corrupt checkpoint {path}: {first_line(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"corrupt checkpoint {path}: expected a state_dict")
    return state


#: TagSpec fields written into a checkpoint's metadata only when set, so that the metadata of every tag
#: without them stays byte-identical to what earlier versions wrote (DVC's record of trained networks).
OPTIONAL_SPEC_FIELDS = ("hidden", "cluster_gradient")


def spec_dict(spec: TagSpec) -> dict[str, Any]:
    """The tag's recipe as JSON-ready values (the checkpoint metadata's ``spec``)."""
    d = asdict(spec)
    for key in OPTIONAL_SPEC_FIELDS:
        if d[key] is None:
            del d[key]
    return d
