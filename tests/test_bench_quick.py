"""The performance benchmarks run end to end in their --quick mode and record what they measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def _recorded(path: Path, key: str) -> dict:
    data = json.loads(path.read_text())
    assert key in data and "machine" in data[key]
    return data[key]


def test_bench_training_quick(tmp_path: Path) -> None:
    from benchmark import bench_training

    out = tmp_path / "perf.json"
    assert bench_training.main(["--quick", "--out", str(out)]) == 0
    res = _recorded(out, "training")
    assert res["weights_identical"] is True and res["networks"] == 2 and res["quick"] is True


def test_bench_clustering_quick(tmp_path: Path) -> None:
    from benchmark import bench_clustering

    out = tmp_path / "perf.json"
    assert bench_clustering.main(["--quick", "--out", str(out)]) == 0
    res = _recorded(out, "clustering")
    assert set(res["graphs"]) == {"small-cnn", "mlp"}
    assert res["graphs"]["mlp"]["dense_same_labels_as_arpack"] is True
    assert res["shuffle_null"]["null_ncuts_identical"] is True


def test_bench_lesion_quick(tmp_path: Path) -> None:
    from benchmark import bench_lesion

    out = tmp_path / "perf.json"
    assert bench_lesion.main(["--quick", "--generic-lesions", "0", "--out", str(out)]) == 0
    res = _recorded(out, "lesion")
    peers = res["mlp"]["peers"]
    assert res["mlp"]["naive_engine_count_mismatches"] == 0 and peers["hook"]["count_mismatches"] == 0
    if importlib.util.find_spec("captum") is None:
        assert peers["captum_single"] == "not installed"
    else:
        assert peers["captum_single"]["count_mismatches"] == peers["captum_batched"]["count_mismatches"] == 0
    assert 0 < peers["flop_limit"]["engine_fraction_of_limit"]
    assert set(res["peer_ratios"]) == {"vs_naive", "vs_hook", "vs_captum_single", "vs_captum_batched",
                                       "fraction_of_flop_limit"}


def test_bench_lesion_generic_quick(tmp_path: Path) -> None:
    """The generic (hooked) lesion path on ResNet-18 gives the plain hook's and Captum's counts."""
    from benchmark import bench_lesion

    out = tmp_path / "perf.json"
    assert bench_lesion.main(["--quick", "--only-generic", "--out", str(out)]) == 0
    res = _recorded(out, "lesion_generic")
    assert "lesion" not in json.loads(out.read_text())  # --only-generic runs nothing else
    assert res["engine_method"] == "hooks" and res["lesions"] == 3 and res["generic_lesions_per_s"] > 0
    assert res["hook"]["count_mismatches"] == 0 and res["ratios"]["generic_over_hook"] > 0
    if importlib.util.find_spec("captum") is None:
        assert res["captum_single"] == "not installed"
    else:
        assert res["captum_single"]["count_mismatches"] == res["captum_batched"]["count_mismatches"] == 0
        assert set(res["ratios"]) == {"generic_over_hook", "generic_over_captum_single", "generic_over_captum_batched"}


def test_generic_lesion_peers_see_the_lesion() -> None:
    """The hook and Captum peers are not vacuous: a lesion of every channel changes their counts."""
    import numpy as np
    import torch
    from torchvision.models import resnet18

    from benchmark import bench_lesion

    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        y = model(x).argmax(1)
    everything = np.arange(64)
    hooked = bench_lesion.hook_counts(model, "conv1", everything, x, y, 10, module_name="relu")
    generic = bench_lesion.lesion_counts(model, "conv1", [everything], x, y)[0]
    assert np.array_equal(hooked, generic) and hooked.sum() < len(x)  # the intact network gets all right
    if importlib.util.find_spec("captum") is not None:
        captum = bench_lesion.captum_counts(model, "conv1", [everything[:63]], x, y, 10, batched=False, module_name="relu")
        assert np.array_equal(captum[0], bench_lesion.lesion_counts(model, "conv1", [everything[:63]], x, y)[0])


def test_bench_visualize_quick(tmp_path: Path) -> None:
    from benchmark import bench_visualize

    out = tmp_path / "perf.json"
    assert bench_visualize.main(["--quick", "--out", str(out)]) == 0
    res = _recorded(out, "feature_visualisation")
    mlp = res["networks"]["mlp"]
    if importlib.util.find_spec("lucent") is None:
        assert res["peer_ratios"]["mlp_vs_lucent_batched"] == "not installed"
    else:
        assert mlp["lucent_batched_images_per_second"] > 0 and mlp["speedup_vs_lucent_batched"] > 0


def test_missing_peer_is_recorded_as_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from benchmark import bench_visualize

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lucent" else real(name, *a))
    res = bench_visualize.compare_lucent(torch.nn.Linear(2, 2), [], 1, 1, [1, 1, 2], 1.0, 1)
    assert res == {"lucent_single": "not installed", "lucent_batched": "not installed"}


def test_gpu_cnn_rows_plans_every_paper_cnn_stage_seed_by_seed(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark import gpu_cnn_rows

    stages = gpu_cnn_rows.cnn_stages()
    base = {"CNN-MNIST", "CNN-MNIST+DROPOUT", "CNN-FASHION", "CNN-FASHION+DROPOUT"}
    assert {s.family for s in stages} == {"cnn"} and base <= {s.tag for s in stages}
    assert [s.seed for s in stages] == sorted(s.seed for s in stages)  # seed 0 of every tag first
    for i, s in enumerate(stages):  # each network is trained before its analyses
        if s.kind != "train":
            assert any(t.kind == "train" and (t.tag, t.seed) == (s.tag, s.seed) for t in stages[:i])
    assert gpu_cnn_rows.main(["--dry-run"]) == 0
    assert capsys.readouterr().out.count("benchmark.stages") == len(stages)
