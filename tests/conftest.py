"""Shared fixtures. Tests mirror ``modularity/``: ``tests/test_<module>.py``."""

from __future__ import annotations

import os

import pytest
import torch

torch.use_deterministic_algorithms(True, warn_only=True)

# Under pytest-xdist (`make test` runs one worker per core), each worker gets its share of the cores, so
# two workers on two cores do not each start two threads. Results do not depend on the thread count.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


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
