"""Per-layer table: output shape, trainable parameters, connections, multiply-adds.

Connections follow the paper's counting (Section II-B): every weighted input of every unit,
plus one for its bias, so LeNet-5 totals 340,908. Multiply-adds count the weighted inputs only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..models.baselines import Counted
from ..models.boosted import BoostedLeNet4
from ..models.lenet5_1998 import EuclideanRBF, Subsampling, TableConv


def _units(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape[1:]:
        n *= s
    return n


def _layer_counts(module: nn.Module | None, out_shape: tuple[int, ...], in_shape) -> tuple[int, int]:
    """(connections, multiply-adds) of one named layer."""
    units = _units(out_shape)
    if module is None:
        return 0, 0
    if isinstance(module, Counted):  # Fig. 9's k-NN, PCA, RBF units: their own rule
        return module.counts()
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, TableConv))]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if convs:
        conv = convs[0]
        maps = conv.cout if isinstance(conv, TableConv) else conv.out_channels
        macs = (units // maps) * conv.weight.numel()  # positions per map x all kernels' weights
        has_bias = getattr(conv, "bias", None) is not None
        return macs + (units if has_bias else 0), macs
    if linears:
        lin = linears[0]
        macs = lin.weight.numel()
        return macs + (lin.out_features if lin.bias is not None else 0), macs
    if isinstance(module, Subsampling):
        return units * 5, units * 4
    if isinstance(module, EuclideanRBF):
        n = module.prototypes.numel()
        return n, n
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return units * 4, units * 4
    return 0, 0


def layer_table(model: nn.Module, input_size: int = 32) -> list[dict]:
    if isinstance(model, BoostedLeNet4):  # every member's layers, as net1.c1, ...
        return [{**row, "layer": f"{name}.{row['layer']}"}
                for name in ("net1", "net2", "net3")
                for row in layer_table(getattr(model, name), input_size)]
    was = model.training
    model.eval()
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 1, input_size, input_size))
    model.train(was)
    rows, prev = [], (1, 1, input_size, input_size)
    for name, t in feats.items():
        module = getattr(model, name, None)
        if name == "out":
            module = getattr(model, "rbf", None) or getattr(model, "head", None)
            name = "rbf" if isinstance(module, EuclideanRBF) else "head"
        elif module is None and name in ("s2", "s4"):
            module = getattr(model, "pool", None)
        params = sum(p.numel() for p in module.parameters() if p.requires_grad) if module is not None else 0
        if name in ("s2", "s4") and isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            params = 0
        conns, macs = _layer_counts(module, tuple(t.shape), prev)
        rows.append({"layer": name, "output": list(t.shape[1:]), "params": params,
                     "connections": conns, "macs": macs})
        prev = tuple(t.shape)
    return rows


def format_table(name: str, rows: list[dict]) -> str:
    lines = [f"{name}", f"{'layer':<6} {'output':<16} {'params':>9} {'connections':>12} {'mult-adds':>10}"]
    for r in rows:
        shape = "x".join(str(s) for s in r["output"])
        lines.append(f"{r['layer']:<6} {shape:<16} {r['params']:>9,} {r['connections']:>12,} {r['macs']:>10,}")
    tot = {k: sum(r[k] for r in rows) for k in ("params", "connections", "macs")}
    lines.append(f"{'total':<6} {'':<16} {tot['params']:>9,} {tot['connections']:>12,} {tot['macs']:>10,}")
    return "\n".join(lines)
