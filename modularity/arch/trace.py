"""Derive a model's layers of units, and how they feed each other, from its ``torch.fx`` trace.

* Every ``nn.Linear`` / ``nn.Conv2d`` call is a weight layer; its output channels are units.
* A model with any ``nn.Conv2d`` is a *conv* network: its units are the conv channels (all analysed;
  inputs, dense layers and logits are not units, docs/methods.md §2.2), named by the conv's dotted module name.
  Otherwise it is a *dense* network: ``input`` (the pixels), ``hidden1``..``hiddenN`` (analysed) and
  ``output`` (the last Linear, the logits) are all units, as in the paper's MLP (docs/methods.md §2.1).
* Post-activation value: from a layer's node, through its own norm (a norm reading only its output) and
  then the activation reading only that: the last of them is the layer's ``node``.
* Dataflow (``Flow``): from each producer (a weight layer, or the input of a dense network) along
  channel-preserving operations (:mod:`modularity.arch.ops`) to every weight layer that reads it,
  recording the channel offset (``torch.cat``) and the norms passed on the way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from torch import fx, nn

from ..errors import UnsupportedModelError
from . import ops
from .spec import LayerSpec

Mode = Literal["dense", "conv", "declared"]


@dataclass(frozen=True)
class Flow:
    """Channels of layer ``src`` reach weight layer ``dst`` at input offset ``offset`` through ``norms``.

    ``norms`` is the path's ``(norm module name, channel offset into that norm)`` in path order, not
    counting ``dst``'s own norm (that scales ``dst``'s output channels).
    """

    src: str
    dst: str
    offset: int
    norms: tuple[tuple[str, int], ...] = ()


@dataclass(eq=False)
class Layout:
    """Everything the registry knows about a model's units."""

    specs: list[LayerSpec]
    mode: Mode
    flows: list[Flow] = field(default_factory=list)
    own_norm: dict[str, str] = field(default_factory=dict)  # layer name -> module name of its own norm
    graph: fx.Graph | None = None
    flow_error: str | None = None  # why the dataflow (graph edges) cannot be derived; lesions still work


def trace_model(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` in eval mode; untraceable models raise a one-line error."""
    was = model.training
    model.eval()
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for data-dependent control flow
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise UnsupportedModelError(
            f"unsupported model type {type(model).__name__}: torch.fx cannot trace it ({type(exc).__name__}: {first}); "
            "declare its layers with modularity.arch.declare_layout (docs/own-network.md)") from None
    finally:
        model.train(was)


def derive_layout(model: nn.Module) -> Layout:
    """The :class:`Layout` of a traceable model (module docstring)."""
    gm = trace_model(model)
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    role = {n: ops.classify(n, modules) for n in nodes}
    uses = Counter(n.target for n in nodes if n.op == "call_module")
    placeholders = [n for n in nodes if role[n] == "input"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(f"unsupported model type {type(model).__name__}: its forward takes "
                                    f"{len(placeholders)} inputs; one input tensor is supported")
    weights = [n for n in nodes if role[n] == "weight"]
    for n in weights:
        if uses[n.target] > 1:
            raise UnsupportedModelError(f"weight layer {n.target!r} is called {uses[n.target]} times per forward "
                                        "pass; shared weights are not supported")
    convs = [n for n in weights if isinstance(modules[n.target], nn.Conv2d)]
    mode: Mode = "conv" if convs else "dense"
    layer_nodes = convs if convs else weights
    if mode == "dense" and len(weights) < 2:
        raise UnsupportedModelError(f"unsupported model type {type(model).__name__}: found {len(weights)} "
                                    "nn.Linear and no nn.Conv2d; a network needs at least one hidden layer")

    # Names and post-activation nodes.
    names: dict[fx.Node, str] = {}
    if mode == "conv":
        names = {n: str(n.target) for n in convs}
    else:
        for i, n in enumerate(weights[:-1], start=1):
            names[n] = f"hidden{i}"
        names[weights[-1]] = "output"
    specs: list[LayerSpec] = []
    own_norm: dict[str, str] = {}
    if mode == "dense":
        first = weights[0]
        specs.append(LayerSpec("input", "input", modules[first.target].in_features, None, None, analysed=False,
                               node=placeholders[0].name))
    for n in layer_nodes:
        mod = modules[n.target]
        width = mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features
        cur = n
        users = list(cur.users)
        if len(users) == 1 and role[users[0]] == "norm" and users[0].op == "call_module":
            own_norm[names[n]] = str(users[0].target)
            cur = users[0]
        users = list(cur.users)
        act: fx.Node | None = None
        if len(users) == 1 and role[users[0]] == "activation":
            act = cur = users[0]
        is_output = mode == "dense" and n is weights[-1]
        activation = None
        if act is not None and act.op == "call_module" and uses[act.target] == 1 and not is_output:
            activation = str(act.target)
        batchnorm = None
        if act is not None and not is_output:
            b = act
            while len(b.users) == 1 and role[next(iter(b.users))] == "pass" and next(iter(b.users)).op == "call_module":
                b = next(iter(b.users))
            nxt = list(b.users)
            if len(nxt) == 1 and nxt[0].op == "call_module" and isinstance(modules[nxt[0].target], ops.BATCHNORM_MODULES) \
                    and uses[nxt[0].target] == 1:
                batchnorm = str(nxt[0].target)
        kind = "conv" if mode == "conv" else ("output" if is_output else "dense")
        specs.append(LayerSpec(names[n], kind, int(width), str(n.target), activation, batchnorm,  # type: ignore[arg-type]
                               analysed=not is_output, node=cur.name))
    layout = Layout(specs, mode, [], own_norm, gm.graph)
    try:
        layout.flows = _flows(gm, modules, role, names, placeholders[0] if mode == "dense" else None, mode, own_norm)
    except UnsupportedModelError as exc:  # only the weight graph needs the dataflow: raised by graph_of
        layout.flow_error = str(exc)
    return layout


def _width(node: fx.Node, modules: dict[str, nn.Module], role: dict[fx.Node, str], memo: dict[fx.Node, int | None]
           ) -> int | None:
    """Channel count of a node's value, propagated symbolically (``None``: unknown, e.g. the input)."""
    if node in memo:
        return memo[node]
    r = role.get(node)
    out: int | None = None
    if r == "weight":
        mod = modules[node.target]
        out = mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features
    elif r == "cat":
        widths = [_width(a, modules, role, memo) if isinstance(a, fx.Node) else None for a in node.args[0]]
        out = None if any(w is None for w in widths) else sum(widths)  # type: ignore[misc]
    elif r in ("norm", "activation", "pass", "add"):
        for a in node.args:
            if isinstance(a, fx.Node):
                out = _width(a, modules, role, memo)
                if out is not None:
                    break
    memo[node] = out
    return out


def _flows(gm: fx.GraphModule, modules: dict[str, nn.Module], role: dict[fx.Node, str], names: dict[fx.Node, str],
           input_node: fx.Node | None, mode: Mode, own_norm: dict[str, str]) -> list[Flow]:
    memo: dict[fx.Node, int | None] = {}
    # Whether a unit layer can be reached from a node: operations after the last one (a softmax on the
    # logits, a custom head after the convs) connect no units and are never an error.
    reaches: dict[fx.Node, bool] = {}
    for n in reversed(list(gm.graph.nodes)):
        reaches[n] = any((u in names and not (mode == "conv" and isinstance(modules.get(str(u.target)), nn.Linear)))
                         or reaches.get(u, False) for u in n.users)
    producers: list[tuple[fx.Node, str]] = ([(input_node, "input")] if input_node is not None else [])
    producers += [(n, nm) for n, nm in names.items()]
    flows: list[Flow] = []
    for start, src in producers:
        own = own_norm.get(src)
        # (node reached, node it came from, channel offset, norms so far, reshaped on the way)
        stack: list[tuple[fx.Node, fx.Node, int, tuple[tuple[str, int], ...], bool]] = [
            (u, start, 0, (), False) for u in start.users]
        while stack:
            cur, prev, offset, norms, reshaped = stack.pop()
            r = role[cur]
            if r == "output" or r == "dead" or (r != "weight" and not reaches[cur]):
                continue
            if r == "weight":
                mod = modules[cur.target]
                if cur in names and not (mode == "conv" and isinstance(mod, nn.Linear)):
                    if reshaped and isinstance(mod, nn.Conv2d):
                        raise UnsupportedModelError(f"a view/reshape between {src!r} and conv {cur.target!r} "
                                                    "scrambles channels; not supported")
                    flows.append(Flow(src, names[cur], offset, norms))
                continue  # dense layers of a conv net are not units (docs/methods.md §2.2)
            if r == "norm":
                if str(cur.target) != own:
                    norms = norms + ((str(cur.target), offset),)
            elif r == "cat":
                parts = cur.args[0]
                pos = 0
                found = False
                for a in parts:
                    w = _width(a, modules, role, memo) if isinstance(a, fx.Node) else None
                    if a is prev:
                        found = True
                        stack.extend((u, cur, offset + pos, norms, reshaped) for u in cur.users)
                    if w is None:
                        if found:
                            break
                        raise UnsupportedModelError(f"cannot tell the channel count of an input of torch.cat "
                                                    f"({cur.name}) after {src!r}")
                    pos += w
                continue
            elif r == "reshape":
                reshaped = True
            elif r == "unsupported":
                raise UnsupportedModelError(
                    f"unsupported operation {ops.op_name(cur, modules)} after {src!r}: the registry cannot tell which "
                    "channels it mixes; use a supported operation (docs/own-network.md) or declare the layers with "
                    "modularity.arch.declare_layout")
            stack.extend((u, cur, offset, norms, reshaped) for u in cur.users)
    return flows

