"""Turn a training run into bundled weights with a model card (``lenet5 bundle RUN_DIR NAME``).

The weights are re-saved without optimiser state (a quarter of a megabyte for LeNet-5), then
*re-evaluated from the written file* on the full test split, so the card's accuracy, error
count and per-class accuracy are those of exactly the bytes that ship. The card also records
how the run was made: the command, the seed, the commit, the resolved config, the per-epoch
curve and library versions. A test re-evaluates every bundled model against its card.

Writing into the installed package's own weights folder (the default) replaces what ships, so
it needs ``force=True`` (``lenet5 bundle --force``); anywhere else (``--out-dir``) it does not.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import time
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import TrainConfig, resolve_config
from ..weights import WEIGHTS_DIR

MAX_BYTES = 1_000_000
# Config fields that say where things go, not what is trained.
_NOT_RECIPE = {"out", "resume", "data_dir", "progress", "preset", "nproc"}


def reproduce_command(cfg: dict, out: str) -> str:
    """A ``lenet5 train`` command line that resolves to the same config as ``cfg``."""
    preset = cfg.get("preset")
    base = resolve_config(preset).to_dict() if preset else TrainConfig().to_dict()
    parts = ["lenet5", "train"] + (["--preset", preset] if preset else []) + ["--seed", str(cfg["seed"])]
    for key, value in cfg.items():
        if key in _NOT_RECIPE | {"seed"} or base.get(key) == value:
            continue
        if key == "model_args":
            for k, v in value.items():
                if base["model_args"].get(k) != v:
                    parts += ["--set", f"model_args.{k}={json.dumps(v)}"]
            continue
        parts += ["--set", f"{key}={json.dumps(value)}"]
    parts += ["--data-dir", "DATA_ROOT", "--out", out]
    return shlex.join(parts)


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD's hash, with ``-dirty`` if tracked files are modified; ``unknown`` outside git."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=cwd, capture_output=True, text=True, check=True)  # noqa: E731
        head = run("rev-parse", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make_bundle(
    run_dir: str | Path,
    name: str,
    data_dir: str | None = None,
    command: str | None = None,
    commit: str | None = None,
    out_dir: str | Path = WEIGHTS_DIR,
    log=print,
    force: bool = False,
) -> dict:
    """Write ``NAME.safetensors``, ``NAME.json`` and ``NAME.md`` into ``out_dir``; return the card.

    ``run_dir`` is anything :func:`lenet5.inference.load.resolve` accepts, checked as a bundle
    source (model, normalisation, train config and epoch present and well-formed).
    """
    from .evaluate import evaluate_checkpoint
    from .load import resolve

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ValueError(f"bundle name {name!r}: use letters, digits, '-' and '_'")
    out_dir = Path(out_dir)
    if out_dir.resolve() == WEIGHTS_DIR.resolve() and not force:
        raise ValueError(f"this would write into the installed package's weights ({WEIGHTS_DIR}) "
                         "and replace what ships; pass --out-dir DIR, or --force to do it")
    source = resolve(run_dir)
    state, _, meta = ckpt.read_checkpoint(source.path, purpose="bundle")
    cfg = meta["train_config"]
    if not (isinstance(cfg.get("seed"), int) and not isinstance(cfg["seed"], bool)):
        raise ckpt.CheckpointError(f"{source.path}: train_config has no whole-number seed")
    path = out_dir / f"{name}.safetensors"
    keep = ("model", "model_config", "normalization", "dataset", "classes", "head", "engine",
            "train_config", "epoch", "metrics", "history", "versions")
    bundle_meta = {"format": ckpt.FORMAT, **{k: meta[k] for k in keep if k in meta},
                   "bundle": {"name": name}}
    header = {"lenet5": json.dumps(bundle_meta, default=ckpt._json_default)}
    tensors = {k: ckpt.to_numpy(v) for k, v in state.items()}
    ckpt.write_safetensors(path, tensors, header)
    size = path.stat().st_size
    if size > MAX_BYTES:
        path.unlink()
        raise ValueError(f"{name}: {size:,} bytes is over the {MAX_BYTES:,}-byte limit for bundles")

    log(f"evaluating {path.name} on the {meta.get('dataset', 'mnist')} test split ...")
    m = evaluate_checkpoint(str(path), meta.get("dataset"), "test", data_dir)
    card = {
        "name": name,
        "model": meta["model"],
        "preset": cfg.get("preset"),
        "head": meta.get("head"),
        "params": trainable_parameters(path),
        "file": path.name,
        "bytes": size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "command": command or reproduce_command(cfg, f"runs/{name}"),
        "reproduce": reproduce_command(cfg, f"runs/{name}"),
        "seed": cfg["seed"],
        "commit": commit or git_commit(),
        "epochs": meta["epoch"],
        "dataset": m["dataset"],
        "test": {"n": m["n"], "errors": m["errors"], "accuracy": m["accuracy"],
                 "error_rate": m["error_rate"]},
        "per_class_accuracy": m["per_class_accuracy"],
        "confusion_matrix": m["confusion_matrix"],
        "history": [{k: r[k] for k in ("epoch", "train_error", "test_error", "test_errors") if k in r}
                    for r in meta.get("history", [])],
        "train_config": cfg,
        "versions": meta.get("versions", {}),
        "created": time.strftime("%Y-%m-%d"),
    }
    ckpt.atomic_write_text(out_dir / f"{name}.json", json.dumps(card, indent=2) + "\n")
    ckpt.atomic_write_text(out_dir / f"{name}.md", card_markdown(card))
    for suffix in (".safetensors", ".json", ".md"):
        (out_dir / f"{name}{suffix}").chmod(0o644)  # package data: readable by everyone
    log(f"{name}: {card['test']['accuracy'] * 100:.2f}% ({card['test']['errors']} errors) -> {out_dir}")
    return card


def trainable_parameters(path: Path) -> int:
    """Trainable parameters only: not batch-norm statistics, not the RBF's fixed prototypes."""
    from .load import load

    model = load(path).model
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def card_markdown(card: dict) -> str:
    t = card["test"]
    preset = f" (preset `{card['preset']}`)" if card["preset"] else ""
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"`{card['model']}`{preset}, {card['head']} head, {card['params']:,} trainable parameters; "
        f"`{card['file']}` is {card['bytes']:,} bytes, sha256 `{card['sha256'][:16]}...`.",
        "",
        "## Result",
        "",
        f"{card['dataset']} test split: **{t['accuracy'] * 100:.2f}% accuracy, {t['errors']} errors "
        f"in {t['n']:,}** (measured on this file by `lenet5 bundle`; "
        "`tests/test_bundled.py` re-checks the error count).",
        "",
        "| class | " + " | ".join(card["per_class_accuracy"]) + " |",
        "|---|" + "---|" * len(card["per_class_accuracy"]),
        "| accuracy % | " + " | ".join(f"{v * 100:.2f}" for v in card["per_class_accuracy"].values()) + " |",
        "",
        "## How it was trained",
        "",
        f"- command: `{card['command']}`",
        f"- seed {card['seed']}, {card['epochs']} epochs, commit `{card['commit']}`",
        f"- versions: {', '.join(f'{k} {v}' for k, v in card['versions'].items())}",
        f"- bundled on {card['created']} with `lenet5 bundle RUN_DIR {card['name']}`",
        "",
        "To reproduce (`DATA_ROOT` holds `mnist/`):",
        "",
        "```bash",
        card["reproduce"],
        f"lenet5 bundle runs/{card['name']} {card['name']} --data-dir DATA_ROOT",
        "```",
        "",
        "## Curve",
        "",
        "| epoch | train error % | test error % | test errors |",
        "|---|---|---|---|",
    ]
    for r in card["history"]:
        lines.append(f"| {r['epoch']} | {r['train_error'] * 100:.2f} | {r['test_error'] * 100:.2f} "
                     f"| {r.get('test_errors', '')} |")
    return "\n".join(lines) + "\n"

