"""ONNX export of a trained checkpoint, for inference without PyTorch.

The exported graph is the unwrapped model's ``forward``, nothing more:

- input ``image``: ``(N, 1, 32, 32)`` float32, **already normalised** the way the model was
  trained: the 28x28 digit in [0, 1] (0 = background) padded by 2 on each side, then
  ``(x - shift) * scale`` with the ``normalization_*`` values stored in the file's metadata;
- output ``output``: ``(N, 10)`` float32, the model's raw outputs: logits for a ``logits`` head
  (higher is better), RBF distances for an ``rbf`` head (the 1998 model; *smaller* is better, so
  the prediction is the argmin).

The batch dimension is dynamic. Everything needed to use the file is in its ``metadata_props``
(model, head, normalisation, classes, lenet5 version), so a consumer needs no checkpoint. They
come from metadata checked when the checkpoint was opened (:mod:`lenet5.checkpoint`): a head
that is not the model's, or a missing or invalid normalisation, is refused, never written as a
wrong prediction rule or a silent shift 0 / scale 1.
Preprocessing stays outside the graph on purpose: callers with a different source of digits
(a canvas, a camera) already hold 32x32 fields and should not pay for a second resize.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .. import __version__
from ..checkpoint import atomic_write
from .load import load

INPUT_NAME, OUTPUT_NAME = "image", "output"
FIELD = 32  # the paper's 32x32 input field (Section II-B)


def onnx_metadata(meta: dict) -> dict[str, str]:
    """The self-description of a checked checkpoint (:func:`lenet5.inference.load.load`'s
    ``meta``), flattened to ONNX's string -> string properties."""
    norm = meta["normalization"]
    return {
        "lenet5_version": __version__,
        "model": meta["model"],
        "model_config": json.dumps(meta["model_config"]),
        "head": meta["head"],
        "prediction": "argmin" if meta["head"] == "rbf" else "argmax",
        "normalization_mode": norm["mode"],
        "normalization_shift": repr(float(norm["shift"])),
        "normalization_scale": repr(float(norm["scale"])),
        "dataset": meta["dataset"],
        "classes": json.dumps(meta["classes"]),
        "input": f"{INPUT_NAME}: (N, 1, {FIELD}, {FIELD}) float32, normalised "
                 "(x - shift) * scale of the zero-padded [0, 1] digit",
        "output": f"{OUTPUT_NAME}: (N, 10) float32, raw model outputs "
                  "(logits, or RBF distances where head is rbf)",
        "epoch": str(meta.get("epoch", "")),
    }


def _trace_to_onnx(model: torch.nn.Module, path: Path, opset: int) -> None:
    example = torch.zeros(2, 1, FIELD, FIELD)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    # The TorchScript exporter needs no onnxscript; torch warns that it is no longer the default.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)


def export_onnx(source: str | Path | None, out_path: str | Path, opset: int = 17) -> Path:
    """Write the model ``source`` names (a run, a checkpoint file, a bundled name) as an ONNX
    file at ``out_path`` (atomically); returns it."""
    import onnx

    loaded = load(source)  # CheckpointError if missing, bad or inconsistent
    model, meta = loaded.model, loaded.meta

    def write(tmp: Path) -> None:
        _trace_to_onnx(model, tmp, opset)
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, onnx_metadata(meta))
        proto.producer_name, proto.producer_version = "lenet5", __version__
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

    return atomic_write(out_path, write)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an exported file (what a consumer reads before inference)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
