"""``lenet5 export [RUN] OUT.onnx [--opset N]``."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (normalised 32x32 input)")
    p.add_argument("source", metavar="RUN",
                   help="run directory, .safetensors file or bundled model name")
    p.add_argument("out", help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from ..inference.export import export_onnx, read_metadata
    from ..models import describe

    if not args.out.lower().endswith(".onnx"):
        raise ValueError(f"{args.out}: lenet5 export writes ONNX; name the file .onnx")
    try:
        path = export_onnx(args.source, args.out, opset=args.opset)
    except ImportError as e:  # onnx is an optional extra
        raise RuntimeError(f"ONNX export needs `pip install lenet5[onnx]` ({e})") from None
    meta = read_metadata(path)
    model = describe(meta["model"], json.loads(meta.get("model_config", "{}")))
    print(f"wrote {path} ({path.stat().st_size:,} bytes): {model}, head {meta['head']} "
          f"({meta['prediction']}), opset {args.opset}, input image (N, 1, 32, 32) normalised "
          f"{meta['normalization_mode']} (x - {float(meta['normalization_shift']):.6g}) * "
          f"{float(meta['normalization_scale']):.6g}, output (N, 10)")
    return 0
