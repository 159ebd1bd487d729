"""Shared fixtures. Tests mirror ``modularity/``: ``tests/test_<module>.py``."""

from __future__ import annotations

import os

import pytest
import torch

torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MODULARITY_NETWORK") == "1":
        return
    skip = pytest.mark.skip(reason="needs the internet beyond package registries (set MODULARITY_NETWORK=1)")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)
