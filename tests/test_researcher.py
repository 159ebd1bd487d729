"""What a researcher sees: a cheap import, a fast ``--help``, progress bars that stay out of logs,
global ``--device`` / ``--no-progress`` options and invalid options refused at once."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "scipy", "sklearn", "matplotlib")


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=full)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "modularity", *args], capture_output=True, text=True, cwd=REPO,
                          env=full)


def test_import_loads_no_heavy_dependency() -> None:
    out = _python(f"import sys, modularity; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_loads_no_heavy_dependency() -> None:
    code = (f"import sys; from modularity import cli; sys.argv = ['x', '--help']\n"
            f"try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])")
    out = _python(code)
    assert "LOADED []" in out.stdout, out.stdout[-300:] + out.stderr


def test_public_functions_stay_functions_after_their_module_is_imported() -> None:
    code = ("import modularity as m, importlib, types\n"
            "for name in ('partition', 'train', 'importance', 'subclusters'):\n"
            "    mod = importlib.import_module('modularity.' + name)\n"
            "    assert isinstance(mod, types.ModuleType), name\n"
            "    assert callable(getattr(m, name)) and not isinstance(getattr(m, name), types.ModuleType), name\n"
            "    assert getattr(m, name) is getattr(mod, name), name\n"
            "from modularity.partition import ncut\n"
            "assert m.ncut is ncut and m.stats.rank_pvalue\n"
            "print('ok')")
    out = _python(code)
    assert out.stdout.strip() == "ok", out.stderr


def test_every_command_parser_is_torch_free_and_runs_its_modules_function() -> None:
    """The parsers (modularity.commands) import no heavy module; each command's runner names a real function."""
    code = ("import sys, argparse, importlib\n"
            "from modularity import cli\n"
            "parser = cli.build_parser()\n"
            "sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))\n"
            "helps = {a.dest: a.help for a in sub._choices_actions}\n"
            "assert helps == cli.COMMANDS, helps\n"
            "targets = {n: p.get_default('func').target for n, p in sub.choices.items()}\n"
            f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
            "for name, target in targets.items():\n"
            "    module, fn = target.split(':')\n"
            "    assert callable(getattr(importlib.import_module(module), fn)), target\n"
            "print('ok', sorted(targets))")
    out = _python(code)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
    assert "ok ['cluster', 'coherence', 'data', 'importance', 'train']" in out.stdout, out.stderr


# ------------------------------------------------------------------------------------------------ progress


def test_progress_is_off_without_a_terminal_and_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from modularity import progress

    class Tty:
        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            return len(s)

        def flush(self) -> None:
            pass

    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert progress.enabled() and progress.enabled(True) and not progress.enabled(False)
    monkeypatch.setenv(progress.ENV, "0")
    assert not progress.enabled() and not progress.enabled(True)
    monkeypatch.setattr(sys, "stderr", open(os.devnull, "w"))  # noqa: SIM115 - closed by the GC
    monkeypatch.delenv(progress.ENV)
    assert not progress.enabled()
    monkeypatch.setenv(progress.ENV, "1")
    assert progress.enabled() and not progress.enabled(False)
    b = progress.bar(range(3), progress=False)
    assert b.disable and list(b) == [0, 1, 2]


def test_forced_progress_bar_reaches_stderr_of_the_shuffle_null(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from modularity.partition import _run_shuffles
    from tests.test_partition import _reference_test_graph

    graph = _reference_test_graph()
    monkeypatch.setenv("MODULARITY_PROGRESS", "1")
    on = _run_shuffles(graph, 2, 0, 3, 1, 2, "arpack")
    err = capsys.readouterr().err
    assert "shuffle null k=2" in err and "/3 [" in err
    monkeypatch.setenv("MODULARITY_PROGRESS", "0")
    assert _run_shuffles(graph, 2, 0, 3, 1, 2, "arpack") == on  # the bar changes nothing
    assert "shuffle null" not in capsys.readouterr().err


def test_importance_prints_per_layer_not_cumulative_times(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    import torch

    from modularity import importance, partition, subclusters
    from modularity.graph import graph_of
    from modularity.models import build_model

    torch.manual_seed(0)
    model = build_model("DIGITS").eval()
    x, y = torch.rand(60, 64), torch.arange(60) % 10
    subs = subclusters(partition(graph_of(model), k=4, seed=0))
    importance(model, subs, (x, y), n_random=3, seed=0, progress=True, require_above_chance=False)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "lesions in" in ln]
    assert len(lines) == len({s.layer for s in subs})
    assert all(re.fullmatch(r"  hidden\d: \d+ lesions in \d+\.\d s", ln) for ln in lines), lines


# ------------------------------------------------------------------------------------------------ CLI options


@pytest.mark.parametrize("command", ["data", "train", "cluster", "importance", "coherence"])
def test_bogus_device_fails_fast_with_one_line(command: str) -> None:
    t0 = time.perf_counter()
    out = _cli("--device", "bogus", command)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert "invalid choice: 'bogus'" in last and "--device" in last
    assert elapsed < 1.0, elapsed  # the interpreter start included: the parse loads no torch


#: One invalid option per command: (arguments, what the one error line must say).
INVALID_OPTIONS = {
    "data": (("data", "fetch"), "argument action: invalid choice: 'fetch'"),
    "train": (("train", "--tag", "MNIST", "--seed", "one"), "argument --seed: invalid int value: 'one'"),
    "cluster": (("cluster", "ckpt.pt", "--eigen-solver", "qr"), "argument --eigen-solver: invalid choice: 'qr'"),
    "importance": (("importance", "ckpt.pt", "--ties", "bogus"), "argument --ties: invalid choice: 'bogus'"),
    "coherence": (("coherence", "ckpt.pt", "--correction", "bogus"), "argument --correction: invalid choice: 'bogus'"),
}


@pytest.mark.parametrize("command", sorted(INVALID_OPTIONS))
def test_invalid_subcommand_option_fails_in_under_a_second_with_one_line(command: str) -> None:
    """A refused option is one line and exit 2, and comes before torch is imported (the interpreter start
    included, well under a second: importing torch alone takes about two here)."""
    args, message = INVALID_OPTIONS[command]
    t0 = time.perf_counter()
    out = _cli(*args)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert out.stderr.startswith(f"python -m modularity {command}: error:"), out.stderr
    assert elapsed < 1.0, elapsed


@pytest.mark.parametrize("command", ["cluster", "importance", "coherence"])
def test_bad_subcommand_option_fails_before_any_work(command: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed option is an argparse error (exit 2, one error line) before the command's function runs."""
    from modularity import cli, commands

    calls: list[str] = []
    monkeypatch.setattr(commands.Runner, "__call__", lambda self, args: calls.append("ran") or 0)
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "ckpt.pt", "--k", "twelve"])
    assert exc.value.code == 2 and calls == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --k: invalid int value: 'twelve'" in err[-1]
    assert cli.main(["--no-progress", command, "ckpt.pt", "--k", "12"]) == 0 and calls == ["ran"]  # the stub can run


def test_global_options_parse_and_set_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from modularity import cli

    monkeypatch.delenv("MODULARITY_PROGRESS", raising=False)
    monkeypatch.setenv("MODULARITY_DEVICE", "cuda")
    seen: dict[str, str | None] = {}

    def fake(args: argparse.Namespace) -> int:
        seen.update(progress=os.environ.get("MODULARITY_PROGRESS"), device=os.environ.get("MODULARITY_DEVICE"))
        return 0

    parser = cli.build_parser()
    args = parser.parse_args(["--no-progress", "--device", "cpu", "data", "status"])
    assert args.global_no_progress and args.device == "cpu" and args.command == "data"
    args.func = fake
    cli._apply_globals(args)
    fake(args)
    assert seen == {"progress": "0", "device": "cpu"}
    cli._apply_globals(parser.parse_args(["--device", "auto", "data", "status"]))
    assert "MODULARITY_DEVICE" not in os.environ


def test_device_cuda_without_cuda_is_a_one_line_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = _cli("--device", "cuda", "data", "status")
    assert out.returncode == 2 and out.stderr.startswith("error: --device cuda") and out.stderr.count("\n") == 1


def test_default_device_follows_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from modularity import cli
    from modularity.utils import default_device

    monkeypatch.delenv("MODULARITY_DEVICE", raising=False)
    cli._apply_globals(cli.build_parser().parse_args(["--device", "cpu", "train", "--tag", "X"]))
    assert default_device().type == "cpu"


# ------------------------------------------------------------------------------------------------ formatting


def test_effect_formatting() -> None:
    from benchmark.formatting import fmt_factor, fmt_log_effect, fmt_log_effect_factor

    assert fmt_factor(1.1652) == "1.17" and fmt_factor(8.024e54) == "10^54.9" and fmt_factor(float("inf")) == "inf"
    assert fmt_factor(float("nan")) == "–" and fmt_factor(None) == "–" and fmt_factor(3.2e-7) == "10^-6.5"
    assert fmt_log_effect(0.3512, 0.1234, 0.6101) == "0.35 [0.12, 0.61]"
    assert fmt_log_effect(0.5) == "0.50" and fmt_log_effect(float("nan"), 0, 1) == "–"
    assert fmt_log_effect(2.0, float("nan"), float("inf")) == "2.00 [–, inf]"
    assert fmt_log_effect_factor(0.0, -0.1, 0.1) == "×1 [0.905, 1.11]"
    assert fmt_log_effect_factor(78.5) == "×10^34.1"
    from benchmark.formatting import fmt_effect_pair

    assert fmt_effect_pair(8.024e54, 3.412, 2.1, 4.02) == "10^54.9; log 3.41 [2.10, 4.02]"
    assert fmt_effect_pair(1.165, float("nan")) == "1.17" and fmt_effect_pair(None, 0.5) == "–; log 0.50"


# ------------------------------------------------------------------------------------------------ naming


def test_pipeline_result_dir_is_the_shared_output_dir() -> None:
    from benchmark.plan import result_dir
    from modularity.naming import cli_output, cli_stem, output_dir

    root = Path("data/benchmark/default")
    for pruned in (False, True):
        assert result_dir(root, "importance", "MNIST+DROPOUT", 2, pruned) == output_dir(
            root / "results", "importance", "MNIST+DROPOUT", 2, pruned)
    assert output_dir("r", "cluster", "MNIST", 0, True, k=12) == Path("r/MNIST/seed0/pruned/cluster/k12")
    ckpt = Path("data/checkpoints/MNIST/seed0/pruned.pt")
    assert cli_stem(ckpt, 12, 3) == "pruned-k12-seed3"
    assert cli_output(ckpt, "coherence", 12, 3) == Path("data/checkpoints/MNIST/seed0/pruned-k12-seed3-coherence")
    assert cli_output(ckpt, "coherence", 12, 3, out="o") == Path("o/pruned-k12-seed3-coherence")


def test_commands_put_k_and_seed_in_their_default_outputs(tmp_path: Path) -> None:
    from modularity import cli
    from modularity.importance import output_paths as importance_paths
    from modularity.models import build_model, save_checkpoint
    from modularity.partition import output_paths as cluster_paths

    ckpt = tmp_path / "DIGITS" / "seed0" / "pruned.pt"
    save_checkpoint(build_model("DIGITS").eval(), ckpt, {"tag": "DIGITS", "seed": 0, "pruned": True})
    assert cluster_paths(ckpt, 4, 1)[0].name == "pruned-k4-seed1-labels.csv"
    assert importance_paths(ckpt, 4, 1)["csv"].name == "pruned-k4-seed1-importance.csv"
    for seed in (0, 1):
        args = ["coherence", str(ckpt), "--k", "6", "--seed", str(seed), "--steps", "1", "--n-random", "1",
                "--min-size", "1"]
        assert cli.main(args) == 0
    assert sorted(p.name for p in ckpt.parent.iterdir() if p.is_dir()) == ["pruned-k6-seed0-coherence",
                                                                          "pruned-k6-seed1-coherence"]


# ------------------------------------------------------------------------------------------------ docs


def test_reading_results_page_code_and_examples_are_true(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/reading-results.md: its Python block runs, and every "`call` gives `text`" example holds."""
    import re

    import pandas as pd

    import benchmark.formatting as fmt

    text = (REPO / "docs" / "reading-results.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    table = pd.DataFrame({"proportion": [0.1, 0.5], "acc_drop": [0.02, 0.3], "random_acc_drop_mean": [0.01, 0.1],
                          "category": ["other", "important"]})
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(block, {"table": table})  # noqa: S102 - the documentation's own example
    assert (tmp_path / "drop.png").exists()
    examples = re.findall(r"`(fmt_\w+\([^`]*\))` gives\s+`([^`]*)`", text)
    assert len(examples) == 3
    for call, expected in examples:
        assert eval(call, vars(fmt)) == expected, call  # noqa: S307
