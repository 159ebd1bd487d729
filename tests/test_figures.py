"""benchmark.figures: the paper's figure types from a (tiny) pipeline run, and the comparison scatters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.compare import TableComparison
from benchmark.figures import choose_features, choose_lesions, comparison_figure, networks, paper_figures
from benchmark.plan import Column, TableSpec, load_profile, result_dir
from modularity.errors import ModularityError

PNG = b"\x89PNG\r\n\x1a\n"


def _comparison() -> TableComparison:
    cols = (Column("ncut", "n-cut", {"kind": "tolerance", "abs": 0.3}),
            Column("combined_p_loss", "Fisher p", {"kind": "report"}),
            Column("effect_entropy", "effect (ent.)", {"kind": "band", "factor": 1.25, "center": 1.0}),
            Column("combined_p_loss", "#p<.05", {"kind": "replicates"}, stat="n_significant"))
    table = TableSpec("t", "A table", "coherence", "paper.csv", "", cols, ())
    rows = []
    for family, tag in (("mlp", "MNIST"), ("cnn", "CNN-MNIST")):
        for pruned in (False, True):
            for col, ours, paper in (("ncut", 9.9, 10.0), ("combined_p_loss", 1e-12, 0.4),
                                     ("effect_entropy", 8e54, 3e27)):
                rows.append({"family": family, "tag": tag, "pruned": pruned, "k": 12, "column": col, "ours": ours,
                             "paper": paper})
    rows.append({"family": "mlp", "tag": "X", "pruned": True, "k": 12, "column": "ncut", "ours": np.inf, "paper": 1.0})
    return TableComparison(table, pd.DataFrame(rows), pd.DataFrame())


def test_comparison_figure_draws_one_panel_per_median_column(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = []
    original = plt.subplots

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        fig, axes = original(*a, **k)
        seen.append(axes)
        return fig, axes

    plt.subplots = spy
    try:
        path = comparison_figure(_comparison(), tmp_path / "t_k12.png", 12)
    finally:
        plt.subplots = original
    assert path is not None and path.read_bytes().startswith(PNG)
    axes = [ax for ax in seen[0].flat if ax.axison]
    assert [ax.get_title() for ax in axes] == ["n-cut", "Fisher p", "effect (ent.)"]
    assert [ax.get_xscale() for ax in axes] == ["linear", "log", "log"]  # p-values and exploding factors on log axes
    assert comparison_figure(_comparison(), tmp_path / "none.png", 8) is None  # nothing at k = 8


def test_choices_of_sub_clusters() -> None:
    t = pd.DataFrame({"layer": ["a", "a", "b", "b", "b"], "cluster": [0, 1, 0, 1, 2], "tested": [1, 1, 1, 0, 1],
                      "acc_drop": [0.5, 0.1, 0.3, 0.9, 0.0], "random_acc_drop_mean": [0.1, 0.1, 0.0, 0.1, 0.2]})
    picked = choose_lesions(t, 3)
    assert list(zip(picked["layer"], picked["cluster"], strict=True)) == [("a", 0), ("b", 0), ("b", 2)]
    c = pd.DataFrame({"layer": ["a", "a", "b"], "cluster": [0, 1, 0], "p_loss": [0.5, 0.1, 0.9]})
    assert list(choose_features(c, 2)["p_loss"]) == [0.1, 0.9]


@pytest.mark.slow
def test_paper_figures_from_a_tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train DIGITS, run the importance and coherence stages at k = 4, draw every figure; stale results refused.
    The feature figure redraws the stage's images with the stage's own settings (config, random sets, filter)."""
    import modularity.visualize as vis_mod
    from benchmark.stages import run_stage

    calls: list[dict] = []
    real = vis_mod.visualize_subclusters

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append({key: kwargs[key] for key in ("config", "n_random", "min_size", "max_prop")})
        return real(*args, **kwargs)

    monkeypatch.setattr(vis_mod, "visualize_subclusters", recording)

    profile = load_profile("smoke")
    profile.raw["importance"]["default"]["require_above_chance"] = False  # one smoke epoch leaves DIGITS near chance
    # the figure redraws the stage's images with every coherence setting (it once dropped the dtype and the
    # ReLU-override window, and refused the smoke CNN as "stale")
    profile.raw["coherence"]["default"]["relu_override_steps"] = 1
    root, out = tmp_path / "run", tmp_path / "figures"
    run_stage("train", profile, "DIGITS", 0, root=root, progress=False)
    for kind in ("importance", "coherence"):
        run_stage(kind, profile, "DIGITS", 0, pruned=True, ks=[4], root=root)
    assert len(calls) == 1 and calls[0]["config"].dtype == "float64" and calls[0]["config"].relu_override_steps == 1
    assert [n.label for n in networks(root, "importance", 4)] == ["DIGITS pruned seed 0"]
    paths = paper_figures(profile, root, out, k=4)
    assert [p.name for p in paths] == ["drop_vs_proportion_mlp_k4.png", "per_class_DIGITS_pruned_k4.png",
                                       "features_DIGITS_pruned_k4.png"]
    for p in paths:
        assert p.read_bytes().startswith(PNG) and p.stat().st_size < 300_000
    assert len(calls) == 2 and calls[1] == calls[0]  # the figure's visualisation is the stage's
    csv = result_dir(root, "importance", "DIGITS", 0, True) / "k4.csv"
    table = pd.read_csv(csv)
    table["lesioned_acc"] += 0.01
    table.to_csv(csv, index=False)
    with pytest.raises(ModularityError, match="stale"):
        paper_figures(profile, root, out, k=4)


def test_report_removes_the_figures_it_did_not_draw(tmp_path: Path) -> None:
    """A figure of a network the profile no longer runs must not stay beside the new ones."""
    from benchmark.reproduce import remove_stale_figures

    folder = tmp_path / "figures"
    folder.mkdir()
    for name in ("importance_k12.png", "features_CNN-FASHION_unpruned_k12.png", "notes.txt"):
        (folder / name).write_text("x")
    stale = remove_stale_figures(folder, [folder / "importance_k12.png"])
    assert [f.name for f in stale] == ["features_CNN-FASHION_unpruned_k12.png"]
    assert sorted(f.name for f in folder.iterdir()) == ["importance_k12.png", "notes.txt"]
    assert remove_stale_figures(tmp_path / "absent", []) == []
