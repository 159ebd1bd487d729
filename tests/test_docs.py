"""The README and docs pages stay true to the code.

Every fenced code block of README.md and docs/*.md is checked:

* a **command** block (no language): each ``make`` target exists in the Makefile, each
  ``python -m modularity ...`` line parses with the real parser (``modularity.cli.build_parser``; optional
  ``[...]`` groups and ``\\`` continuations as written), each ``python -m benchmark.<module>`` exists and
  knows the options the line passes;
* a **Python** block is either executed by a test (listed in ``EXECUTED``) or marked illustrative in the
  sentence before it; an illustrative block must still compile, and every name it imports from
  ``modularity`` (``from modularity... import X``, ``m.X`` after ``import modularity as m``) must exist.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

#: Python blocks a test runs as written: (page, first line of the block) -> the test that runs it.
EXECUTED = {
    ("README.md", "import torch"): "tests/test_readme.py",
    ("own-network.md", "import torch"): "tests/test_own_network_doc.py",
    ("reading-results.md", "import matplotlib.pyplot as plt"): "tests/test_researcher.py",
}


def _blocks() -> list[tuple[str, str, str, str]]:
    """(page name, language, code, the two lines before the block) for every fenced block."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            before = " ".join(text[: m.start()].splitlines()[-2:])
            out.append((page.name, m.group(1), m.group(2), before))
    return out


BLOCKS = _blocks()
COMMAND_BLOCKS = [b for b in BLOCKS if b[1] == ""]
PYTHON_BLOCKS = [b for b in BLOCKS if b[1] == "python"]


def _command_lines(code: str) -> list[str]:
    """The block's lines with continuations joined and comments removed."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))


def test_the_pages_have_blocks_to_check() -> None:
    assert len(COMMAND_BLOCKS) >= 8 and len(PYTHON_BLOCKS) >= 8


@pytest.mark.parametrize("page,code", [(b[0], b[2]) for b in COMMAND_BLOCKS],
                         ids=[f"{b[0]}:{i}" for i, b in enumerate(COMMAND_BLOCKS)])
def test_command_blocks_name_real_targets_commands_and_options(page: str, code: str) -> None:
    from modularity import cli

    targets = _make_targets()
    for line in _command_lines(code):
        words = shlex.split(line)
        if words[0] == "make":
            for word in words[1:]:
                if "=" not in word:
                    assert word in targets, f"{page}: make {word} is not a Makefile target"
        elif words[:3] == ["python", "-m", "modularity"]:
            args = shlex.split(re.sub(r"\[[^\]]*\]", "", line))[3:]  # optional groups left out
            if any("<" in a or "|" in a for a in args):
                continue
            try:
                cli.build_parser().parse_args(args)
            except SystemExit as exc:
                pytest.fail(f"{page}: `{line}` does not parse (exit {exc.code})")
        elif words[:2] == ["python", "-m"] and words[2].startswith("benchmark."):
            spec = importlib.util.find_spec(words[2])
            assert spec is not None and spec.origin, f"{page}: no module {words[2]}"
            source = Path(spec.origin).read_text()
            for option in (w.split("=")[0] for w in words[3:] if w.startswith("--")):
                assert f'"{option}"' in source, f"{page}: {words[2]} has no option {option}"


def _modularity_names(tree: ast.AST) -> list[tuple[str, str]]:
    """(module, name) for every ``from modularity... import name`` and every ``m.name`` of ``import modularity as m``."""
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name == "modularity"}
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "modularity":
            names += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.append(("modularity", node.attr))
    return names


@pytest.mark.parametrize("page,code,before", [(b[0], b[2], b[3]) for b in PYTHON_BLOCKS],
                         ids=[f"{b[0]}:{i}" for i, b in enumerate(PYTHON_BLOCKS)])
def test_python_blocks_are_executed_or_illustrative_and_use_real_names(page: str, code: str, before: str) -> None:
    first = code.splitlines()[0].strip()
    runner = EXECUTED.get((page, first))
    if runner is None:
        assert "illustrative" in before.lower(), f"{page}: a Python block starting {first!r} is neither run by a " \
                                                 "test nor marked illustrative in the sentence before it"
    else:
        assert (REPO / runner).is_file()
    tree = ast.parse(code)
    for module, name in _modularity_names(tree):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            importlib.import_module(f"{module}.{name}")  # a submodule (``from modularity import stats``)


def test_a_wrong_option_or_target_in_a_page_would_fail() -> None:
    """The checks can fail: a misspelt option, target or name is caught."""
    with pytest.raises(pytest.fail.Exception):
        test_command_blocks_name_real_targets_commands_and_options("x.md", "python -m modularity cluster c.pt --kk 12\n")
    with pytest.raises(AssertionError):
        test_command_blocks_name_real_targets_commands_and_options("x.md", "make reproduse\n")
    with pytest.raises(AssertionError):
        test_command_blocks_name_real_targets_commands_and_options("x.md", "python -m benchmark.report --no-such\n")
    with pytest.raises(AssertionError):
        test_python_blocks_are_executed_or_illustrative_and_use_real_names("x.md", "import modularity as m\n", "")
    with pytest.raises(ModuleNotFoundError):
        test_python_blocks_are_executed_or_illustrative_and_use_real_names(
            "x.md", "from modularity import no_such_name\n", "(illustrative)")
