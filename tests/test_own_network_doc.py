"""docs/own-network.md: its example runs as written, and its operations table matches the registry's."""

from __future__ import annotations

import re
from pathlib import Path

from modularity.arch import ops

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-network.md"


def test_the_example_runs_as_written(capsys) -> None:  # type: ignore[no-untyped-def]
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    exec(compile(block.group(1), str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert "('hidden1', 32, True)" in out and "weights" in out and "activations" in out


def test_supported_operations_table_lists_the_registry_ops() -> None:
    text = DOC.read_text()
    for operation, _ in ops.SUPPORTED_TABLE:
        assert operation.split(" (")[0] in text
    for cls in (*ops.ACTIVATION_MODULES, *ops.NORM_MODULES, *ops.WEIGHT_MODULES):
        assert cls.__name__ in text, cls.__name__
