"""``lenet5 viz KIND``: one picture (PNG or SVG) of a model, a run or a digit."""

from __future__ import annotations

import sys

from .predict import add_source_argument

KINDS = {
    "features": "every layer's feature maps for one image (IMAGE, or --test-index N)",
    "kernels": "the learned C1 kernels",
    "prototypes": "the RBF output's fixed 7x12 prototype bitmaps (Fig. 3)",
    "curves": "training and test error by epoch (the paper's Fig. 5 overlaid for lenet5-1998)",
    "confusion": "confusion-matrix heatmap on the test set",
    "errors": "gallery of misclassified test digits",
    "classes": "per-class test accuracy bars",
    "robustness": "test accuracy against corruption severity (rotation, shift, scale, squeeze, "
                  "stroke width, noise, blur), one line per model (--compare)",
    "animate": "a GIF of one digit (IMAGE or --test-index N) swept through --transform, with "
               "the answer and feature maps frame by frame",
}


def register(sub) -> None:
    p = sub.add_parser("viz", help="plots: feature maps, kernels, curves, confusion, errors (PNG/SVG)")
    p.add_argument("kind", choices=list(KINDS), help="; ".join(f"{k}: {v}" for k, v in KINDS.items()))
    p.add_argument("image", nargs="?", help="image file (features and animate; else --test-index)")
    add_source_argument(p)
    p.add_argument("--test-index", type=int, help="features: use this test-set digit instead of IMAGE")
    p.add_argument("--data-dir", help="data root (default: $LENET5_DATA_DIR, else the user cache)")
    p.add_argument("--limit", type=int, help="confusion/errors/classes: first N test images only")
    p.add_argument("--max", type=int, default=60, help="errors: at most this many digits (default: 60)")
    p.add_argument("--out", help="output .png or .svg (default KIND.png; animate: .gif)")
    p.add_argument("--compare", nargs="+", default=[], metavar="MODEL",
                   help="robustness: more models drawn beside --model")
    p.add_argument("--transform", default="rotate", metavar="KIND",
                   help="animate: rotate, shift, scale, squeeze, stroke, noise, saltpepper or "
                        "blur (default: rotate)")
    p.add_argument("--frames", type=int, default=36, help="animate: frames (default: 36)")
    p.set_defaults(func=cmd_viz)


def cmd_viz(args) -> int:
    from ..reporting import viz  # matplotlib loads only when a picture is drawn

    out = args.out or f"{args.kind}.{'gif' if args.kind == 'animate' else 'png'}"
    if args.max < 1:
        raise ValueError(f"--max must be at least 1, got {args.max}")
    if args.kind == "animate":
        return cmd_animate(args, out)
    fig = make_figure(args)
    print(viz.save(fig, out))
    return 0


def make_figure(args):
    from ..inference.load import load
    from ..inference.predict import Predictor
    from ..models import describe
    from ..reporting import viz

    if args.kind == "prototypes":
        from ..models.bitmaps import rbf_prototypes

        return viz.prototypes(rbf_prototypes().numpy())
    if args.kind == "robustness":
        return robustness_figure(args)
    loaded = load(args.source)
    if args.kind == "curves":
        return viz.training_curves(
            loaded.history, describe(loaded.meta["model"], loaded.meta.get("model_config", {})), "")
    predictor = Predictor.from_loaded(loaded)
    if args.kind == "kernels":
        from ..reporting.report import c1_kernels

        return viz.kernels(c1_kernels(predictor.model), f"{predictor.name}: C1 kernels")
    if args.kind == "features":
        x, label = feature_input(args, predictor.meta["dataset"])
        res = predictor.predict(x)[0]
        answer = res["verdict"] if res["label"] is None else res["label"]
        title = f"{label}: predicted {answer} ({max(res['digit_probs']) * 100:.1f}%) by {predictor.name}"
        return viz.feature_maps(predictor.features(x), x, res["probs"], title)
    from ..inference.evaluate import classification_metrics
    from ..reporting.report import split_predictions

    p = split_predictions(predictor, args.data_dir, "test", args.limit)
    if args.kind == "errors":
        return viz.error_gallery(p["images"], p["labels"], p["preds"], p["confidence"],
                                 predictor.classes, max_n=args.max,
                                 title=f"{predictor.name} misclassified")
    m = classification_metrics(p["labels"], p["preds"], predictor.classes)
    if args.kind == "confusion":
        return viz.confusion_heatmap(m["confusion_matrix"], predictor.classes, f"{predictor.name}")
    return viz.per_class_bars(m["per_class_accuracy"], f"{predictor.name} per-class accuracy")


def feature_input(args, dataset: str):
    from ..inference.images import PredictError, load_image, preprocess

    if args.test_index is not None:
        from ..data.datasets import load_split

        images, labels = load_split(dataset, "test", args.data_dir)
        if not 0 <= args.test_index < len(images):
            raise ValueError(f"--test-index must be in [0, {len(images)})")
        return images[args.test_index].astype("float32") / 255, \
            f"test digit {args.test_index} (label {labels[args.test_index]})"
    if not args.image:
        raise PredictError("viz features needs an IMAGE or --test-index N")
    return preprocess(load_image(args.image)), args.image


def robustness_figure(args):
    from ..data.datasets import load_split
    from ..inference.predict import Predictor
    from ..reporting import robustness

    predictors = [Predictor.load(s) for s in [args.source, *args.compare]]
    x, y = load_split("mnist", "test", args.data_dir)
    n = len(x) if args.limit is None else args.limit
    if not 0 < n <= len(x):
        raise ValueError(f"--limit must be in [1, {len(x)}], got {n}")
    results = robustness.curves(predictors, x[:n].astype("float32") / 255, y[:n],
                                progress=sys.stderr.isatty())
    return robustness.figure(results, f"accuracy on {n:,} corrupted MNIST test digits")


def cmd_animate(args, out: str) -> int:
    from ..checkpoint import atomic_write
    from ..inference.predict import Predictor
    from ..reporting.animate import check, gif

    if not out.lower().endswith(".gif"):
        raise ValueError(f"{out}: viz animate writes a .gif")
    check(args.transform, args.frames)  # before the model loads
    predictor = Predictor.load(args.source)
    x, _ = feature_input(args, predictor.meta["dataset"])
    data = gif(predictor, x, args.transform, args.frames)
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    print(out)
    return 0
