"""``lenet5 predict IMAGE...``: the digit in each image, with probabilities."""

from __future__ import annotations

import json
import sys

from ..inference.load import ENGINES


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict the digit in image files (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_source_argument(p)
    p.add_argument("--engine", default="torch", choices=ENGINES,
                   help="run the model in PyTorch or the NumPy engine (default: torch)")
    p.add_argument("--top-k", type=int, default=3, help="how many of the likeliest classes to show (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON document with every result")
    p.add_argument("--deslant", action="store_true",
                   help="deslant each digit first (moment-based deskew, as Fig. 9's deslanted rows)")
    p.add_argument("--no-reject", dest="reject", action="store_false",
                   help="always answer a digit, even for an image that shows none (default: "
                        "'no digit' or 'unsure' where the model has a reject calibration)")
    p.set_defaults(func=cmd_predict)


def add_source_argument(p) -> None:
    """``--model`` (or ``--checkpoint``): the one option naming the model, in every command
    that takes a model as an option."""
    p.add_argument("--model", "--checkpoint", dest="source", metavar="MODEL",
                   help="bundled model name (see `lenet5 models`), run directory or .safetensors "
                        "file (default: the default bundled model)")


def cmd_predict(args) -> int:
    from ..inference.predict import PredictError, Predictor, load_image  # Pillow: only here

    predictor = Predictor.load(args.source, engine=args.engine, reject=args.reject)
    results, failed = [], 0
    for path in args.images:
        try:
            digit = predictor.digit_from(load_image(path))  # blank: "no digit" if it can refuse
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
                          "reject": reject_facts(predictor), "results": results}, indent=2))
    elif predictor.posterior == "map-rbf":
        print("(digits: P(i) = exp(-y_i) / sum_k exp(-y_k) over the RBF distances y; rubbish: "
              "the MAP posterior's share exp(-j) / (exp(-j) + sum_k exp(-y_k)))")
    return 1 if failed else 0


def format_result(res: dict) -> str:
    """``file: 7   7: 99.1%  ...``: probabilities over the ten digits (the RBF posterior's
    rubbish mass shown apart); a refused image: ``file: no digit (why)  guess 3``."""
    digits = res.get("digit_probs", res["probs"])
    top = "  ".join(f"{label}: {digits[label] * 100:5.1f}%" for label, _ in res["top_k"])
    extra = f"  (rubbish {res['rubbish'] * 100:.1f}%)" if "rubbish" in res else ""
    if res["label"] is None:
        return f"{res['file']}: {res['verdict']}   ({res['reason']}; guess {top}){extra}"
    return f"{res['file']}: {res['label']}   {top}{extra}"


def reject_facts(predictor) -> dict | None:
    """The reject option's operating point, as the JSON output states it (None: off)."""
    r = predictor.rejector
    if r is None:
        return None
    keep = ("model", "val_digits", "no_digit_share", "unsure_share", "measured")
    return {"no_digit_threshold": r.no_digit, "unsure_below": r.unsure,  # the operating point;
            "calibration": {k: r.calibration[k] for k in keep if k in r.calibration}}  # the rest: the model card
