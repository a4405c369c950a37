"""``lenet5 predict IMAGE...``: the digit in each image, with probabilities."""

from __future__ import annotations

import json
import sys

from ..inference.load import ENGINES
from ..inference.predict import PredictError, Predictor, load_image, preprocess


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict the digit in image files (PNG, JPEG, BMP, GIF, TIFF)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_source_argument(p)
    p.add_argument("--engine", default="torch", choices=ENGINES,
                   help="run the model in PyTorch or the NumPy engine (default: torch)")
    p.add_argument("--top-k", type=int, default=3, help="how many of the likeliest classes to show (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON document with every result")
    p.add_argument("--deslant", action="store_true",
                   help="deslant each digit first (moment-based deskew, as Fig. 9's deslanted rows)")
    p.set_defaults(func=cmd_predict)


def add_source_argument(p) -> None:
    """``--model`` (or ``--checkpoint``): the one option naming the model, in every command
    that takes a model as an option."""
    p.add_argument("--model", "--checkpoint", dest="source", metavar="MODEL",
                   help="bundled model name (see `lenet5 models`), run directory or .safetensors "
                        "file (default: the default bundled model)")


def cmd_predict(args) -> int:
    predictor = Predictor.load(args.source, engine=args.engine)
    results, failed = [], 0
    for path in args.images:
        try:
            digit = preprocess(load_image(path))
            if args.deslant:
                from ..data.deslant import deslant_images

                digit = deslant_images(digit)
            res = {"file": path, **predictor.predict(digit, args.top_k)[0]}
        except PredictError as e:
            failed += 1
            msg = str(e) if str(e).startswith(f"{path}:") else f"{path}: {e}"  # always name the file
            res = {"file": path, "error": msg}
            print(f"lenet5: error: {msg}", file=sys.stderr)
        results.append(res)
        if not args.json and "error" not in res:
            print(format_result(res))
    if args.json:
        print(json.dumps({"model": predictor.name, "posterior": predictor.posterior,
                          "results": results}, indent=2))
    elif predictor.posterior == "map-rbf":
        print("(probabilities: MAP posterior of the RBF distances, P(i) = exp(-y_i) / "
              "(exp(-j) + sum_k exp(-y_k)); the rest is the rubbish class)")
    return 1 if failed else 0


def format_result(res: dict) -> str:
    top = "  ".join(f"{label}: {p * 100:5.1f}%" for label, p in res["top_k"])
    extra = f"  (rubbish {res['rubbish'] * 100:.1f}%)" if "rubbish" in res else ""
    return f"{res['file']}: {res['label']}   {top}{extra}"
