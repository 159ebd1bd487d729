"""Architectures, tags and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modularity.errors import CheckpointError, UnsupportedModelError
from modularity.layers import analysed_layers, layer_by_name, layer_specs
from modularity.models import (
    TAGS,
    apply_mod_init,
    build_model,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    tag_spec,
)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_mlp_has_the_papers_sizes() -> None:
    m = build_model("MNIST")
    # 784-256-256-256-256-10 with biases
    assert n_params(m) == (784 * 256 + 256) + 3 * (256 * 256 + 256) + (256 * 10 + 10)
    assert [(s.name, s.width, s.analysed) for s in layer_specs(m)] == [
        ("input", 784, False), ("hidden1", 256, True), ("hidden2", 256, True), ("hidden3", 256, True),
        ("hidden4", 256, True), ("output", 10, False)]
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_dropout_variants_add_dropout_only_where_the_reference_does() -> None:
    mlp = build_model("MNIST+DROPOUT")
    assert [n for n, mod in mlp.named_children() if isinstance(mod, torch.nn.Dropout)] == ["drop1", "drop2", "drop3", "drop4"]
    assert all(mod.p == 0.5 for mod in mlp.modules() if isinstance(mod, torch.nn.Dropout))
    cnn = build_model("CNN-MNIST+DROPOUT")
    assert [mod.p for mod in cnn.modules() if isinstance(mod, torch.nn.Dropout)] == [0.25, 0.25, 0.5]
    assert not any(isinstance(mod, torch.nn.Dropout) for mod in build_model("CNN-VGG-CIFAR10").modules())


def test_small_cnn_and_vgg_layouts() -> None:
    cnn = build_model("CNN-MNIST")
    assert [(s.name, s.width) for s in layer_specs(cnn)] == [("conv1", 64), ("conv2", 64), ("conv3", 64)]
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # conv64-conv64-pool-conv64-pool-fc128-fc10 on 28x28x1
    assert n_params(cnn) == (9 * 64 + 64) + 2 * (9 * 64 * 64 + 64) + (7 * 7 * 64 * 128 + 128) + (128 * 10 + 10)
    vgg = build_model("CNN-VGG-CIFAR10")
    specs = analysed_layers(vgg)
    assert [s.width for s in specs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(s.width for s in specs) == 4224  # docs/methods.md §2.2
    assert all(s.batchnorm == f"bn{i}" for i, s in enumerate(specs, start=1))
    vgg.eval()
    assert vgg(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert layer_by_name(vgg, "conv7").activation == "relu7"
    with pytest.raises(UnsupportedModelError, match="no layer 'conv14'"):
        layer_by_name(vgg, "conv14")


def test_glorot_uniform_kernels_and_zero_biases() -> None:
    m = build_model("MNIST")
    bound = (6 / (784 + 256)) ** 0.5
    top = float(m.fc1.weight.detach().abs().max())
    assert 0.95 * bound < top <= bound
    assert float(m.fc1.bias.detach().abs().sum()) == 0.0


def test_tags_cover_the_paper_and_unknown_tags_fail() -> None:
    for tag in ("MNIST", "MNIST+DROPOUT", "FASHION+L1REG", "CNN-MNIST", "CNN-FASHION+MOD-INIT",
                "CNN-VGG-CIFAR10+DROPOUT+L2REG", "vgg16", "resnet50"):
        assert tag in TAGS
    assert tag_spec("CNN-VGG-CIFAR10+L2REG").l2 == 5e-4 and tag_spec("MNIST+L2REG").l2 == 5e-5
    assert tag_spec("CNN-MNIST").batch_size == 64 and tag_spec("CNN-MNIST").epochs == 10
    with pytest.raises(UnsupportedModelError, match=r"unknown tag 'MNIST\+FOO'"):
        build_model("MNIST+FOO")
    with pytest.raises(UnsupportedModelError, match="unsupported model type Linear"):
        layer_specs(torch.nn.Linear(2, 2))


def test_mod_init_scales_within_module_weights_up() -> None:
    torch.manual_seed(0)
    m = build_model("MNIST")
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    apply_mod_init(m, torch.Generator().manual_seed(1))
    assert torch.equal(before["fc1.weight"], m.fc1.weight), "the first matrix is left unchanged"
    ratio = (m.fc2.weight / before["fc2.weight"]).flatten()
    values = set(torch.round(ratio[torch.isfinite(ratio)] * 1000).tolist())
    assert values <= {4600.0, 600.0}
    # output unit i is in module i: fc5 row i scaled up exactly where hidden4 unit is in module i
    r5 = m.fc5.weight / before["fc5.weight"]
    assert torch.allclose(r5[r5 > 1], torch.tensor(4.6))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    m = build_model("DIGITS")
    path = checkpoint_path(tmp_path, "DIGITS", 3, pruned=True)
    assert path == tmp_path / "DIGITS" / "seed3" / "pruned.pt"
    save_checkpoint(m, path, {"tag": "DIGITS", "seed": 3})
    loaded, meta = load_checkpoint(path)
    assert meta["seed"] == 3 and "torch" in meta["versions"]
    for (k, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not loaded.training


def test_same_weights_give_the_same_checkpoint_bytes(tmp_path: Path) -> None:
    """DVC compares outputs by hash: a rerun that trains the same weights must write the same file."""
    m = build_model("DIGITS")
    a, b = tmp_path / "a" / "pruned.pt", tmp_path / "b" / "unpruned.pt"  # different names and folders
    save_checkpoint(m, a, {"tag": "DIGITS"})
    save_checkpoint(m, b, {"tag": "DIGITS"})
    assert a.read_bytes() == b.read_bytes()


def test_bad_checkpoints_give_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "x" / "pruned.pt"
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(path)
    save_checkpoint(build_model("DIGITS"), path, {"tag": "DIGITS"})
    # weights of one architecture, metadata of another
    path.with_suffix(".json").write_text(json.dumps({"tag": "CNN-DIGITS"}))
    with pytest.raises(CheckpointError, match="does not match tag 'CNN-DIGITS'") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    path.with_suffix(".json").write_text(json.dumps({"tag": "DIGITS"}))
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_checkpoint(path)
    path.with_suffix(".json").write_text("{broken")
    with pytest.raises(CheckpointError, match="corrupt checkpoint metadata"):
        load_checkpoint(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="metadata not found"):
        load_checkpoint(path)


def test_torchvision_models_build_without_download() -> None:
    m = build_model("resnet18")
    assert type(m).__name__ == "ResNet"
    with pytest.raises(UnsupportedModelError, match="unknown ImageNet model"):
        from modularity.models import imagenet_model

        imagenet_model("alexnet")
