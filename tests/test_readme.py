"""README.md's "Using it on your own network" example runs as written from a fresh clone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def own_network_blocks() -> list[str]:
    """The python code blocks of the README's "Using it on your own network" section."""
    section = README.read_text().split("## Using it on your own network", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_section_has_one_python_block_that_needs_no_checkpoint() -> None:
    blocks = own_network_blocks()
    assert len(blocks) == 1
    assert "data/checkpoints" not in blocks[0]


@pytest.mark.slow
def test_own_network_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # A fresh clone: an empty working directory and an empty data folder (digits is prepared offline).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODULARITY_DATA", str(tmp_path / "data"))
    (code,) = own_network_blocks()
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    acc = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert acc > 0.9
    for line in ("n-cut", "Fisher p (importance):", "Fisher p (activation):", "p_mean_corrected"):
        assert line in out
    assert "nan" not in out.split("Fisher p (importance):")[1].splitlines()[0]
