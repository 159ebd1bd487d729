"""modularity: importance and coherence of spectral partitions of neural networks.

Data flows model -> graph -> partition -> sub-clusters -> importance / coherence -> statistics ->
tables. See README.md for the public API.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names, resolved lazily so that ``import modularity`` stays cheap and a CLI error is fast.
_EXPORTS = {
    "ModularityError": "modularity.errors",
    "build_model": "modularity.models",
    "load_checkpoint": "modularity.models",
    "save_checkpoint": "modularity.models",
    "tag_spec": "modularity.models",
    "TAGS": "modularity.models",
    "layer_specs": "modularity.layers",
    "LayerSpec": "modularity.layers",
    "load_dataset": "modularity.data",
    "train": "modularity.train",
    "graph_of": "modularity.graph",
    "WeightGraph": "modularity.graph",
    "partition": "modularity.partition",
    "Partition": "modularity.partition",
    "ncut": "modularity.partition",
    "clusterability": "modularity.partition",
    "subclusters": "modularity.subclusters",
    "SubCluster": "modularity.subclusters",
    "importance": "modularity.importance",
    "input_coherence": "modularity.visualize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name == "stats":
        return import_module("modularity.stats")
    raise AttributeError(f"module 'modularity' has no attribute {name!r}")
