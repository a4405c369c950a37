"""``lenet5 train``: flags override a TOML config, which overrides a preset and the defaults.

The flags are derived from :class:`~lenet5.config.TrainConfig`'s fields (name, type, choices,
bounds, help and default), so there is no second list of them here. Flag values arrive as text
and are read and checked by the same rules as ``--set``, TOML files and resumed configs, so a
bad value is one ``lenet5: error:`` line naming the flag, before any data is read.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from ..config import SECTIONS, TrainConfig, resolve_config
from ..fieldtypes import (
    FieldError,
    check,
    choices_of,
    field_map,
    hints,
    parse_text,
    unknown_message,
)


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model (PyTorch, NumPy or compiled engine)",
        description="Train a model. Settings resolve as: defaults (shown) <- --preset <- "
                    "--config FILE <- flags and --set. Every value is checked before any work.",
        argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("config")
    g.add_argument("--config", dest="config_file", metavar="FILE",
                   help="TOML file of TrainConfig keys, top level or in a [train] table "
                        "(default: none)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, VALUE read as JSON (a bare word is text); model "
                        "options as model_args.NAME=VALUE (repeatable; default: none)")
    add_config_flags(p)
    p.set_defaults(func=cmd_train, quick_exit=True)  # lenet5.cli.quick_exit: no teardown


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, grouped by the dataclass's sections."""
    types, group = hints(TrainConfig), p
    for f in fields(TrainConfig):
        group = p.add_argument_group(SECTIONS[f.name]) if f.name in SECTIONS else group
        if not f.metadata.get("flag", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"]
        if "(default:" not in help_:  # where the help says what the default means, it stands
            help_ += f" (default: {show_default(f)})"
        help_ = help_.replace("%", "%%")
        if types[f.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
            continue
        choices = choices_of(types[f.name], f.metadata)
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else METAVARS[_plain(types[f.name])]
        group.add_argument(flag, metavar=metavar, help=help_)


METAVARS = {int: "N", float: "X", str: "PATH"}  # the free-text fields are all paths


def _plain(hint: Any) -> Any:
    """``int | None`` -> ``int``."""
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 else hint


def show_default(f) -> str:
    value = f.default_factory() if f.default is MISSING else f.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, read and checked against their fields (text -> typed values)."""
    given, types, out = vars(args), hints(TrainConfig), {}
    for name, f in field_map(TrainConfig).items():
        if name not in given:
            continue
        value = given[name]
        if isinstance(value, str):
            value = parse_text(types[name], value)
        try:
            out[name] = check("--" + name.replace("_", "-"), types[name], value, f.metadata)
        except FieldError as e:
            raise ValueError(str(e)) from None
    return out


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as typed values; ``model_args.NAME=VALUE`` is collected into
    ``model_args`` and checked once the model is known."""
    types, known, out = hints(TrainConfig), field_map(TrainConfig), {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        if key.startswith("model_args."):
            out.setdefault("model_args", {})[key.split(".", 1)[1]] = parse_text(Any, raw)
            continue
        if key not in known:
            raise ValueError(f"--set: {unknown_message('', [key], known)}")
        try:
            value = check(key, types[key], parse_text(types[key], raw), known[key].metadata)
        except FieldError as e:
            raise ValueError(f"--set {e}") from None
        if key == "model_args":
            value = {**out.get("model_args", {}), **value}
        out[key] = value
    return out


def resume_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """A resumed run continues with the config it was started with, plus the flags given.

    ``--resume`` takes the run directory or its checkpoint file. Runs record an absolute
    ``data_dir``; an older run's relative one meant the directory it was started from, which
    cannot be known: it is used as it reads from here when it exists, and refused otherwise
    (rather than downloading into a new folder), asking for ``--data-dir``.
    """
    from ..checkpoint import read_checkpoint

    run = Path(overrides["resume"])
    if run.is_file():  # RUN/checkpoint.safetensors works like RUN
        run = run.parent
    meta = read_checkpoint(run)[2]
    saved = meta.get("train_config") if isinstance(meta, dict) else None
    if not isinstance(saved, dict):
        raise ValueError(f"{run}: the checkpoint holds no train_config table to resume from")
    saved = dict(saved)
    data_dir = saved.get("data_dir")
    if "data_dir" not in overrides and isinstance(data_dir, str) and not Path(data_dir).expanduser().is_absolute():
        if not Path(data_dir).expanduser().is_dir():
            raise ValueError(f"{run}: the run's data_dir {data_dir!r} is relative to where it "
                             f"was started and is not found from here; pass --data-dir")
        saved["data_dir"] = os.path.abspath(os.path.expanduser(data_dir))
    saved.update({k: v for k, v in overrides.items() if k != "preset"}, resume=str(run))
    return saved


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, int]:
    """``(checked config, processes to launch)`` from parsed ``lenet5 train`` arguments."""
    overrides = flag_values(args)  # every value checked here, before any work
    overrides.update(parse_sets(getattr(args, "set", [])))
    nproc = overrides.get("nproc", 1)  # a resumed run relaunches only when asked
    file = getattr(args, "config_file", None)
    if overrides.get("resume") and not file:
        overrides = resume_overrides(overrides)
    return resolve_config(file=file, overrides=overrides), nproc  # the whole, checked


def cmd_train(args) -> int:
    cfg, nproc = config_from_args(args)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # never relaunch from a rank
        from ..training.distributed import launch_torchrun

        argv = args.argv[args.argv.index("train") + 1 :]
        return launch_torchrun(nproc, argv)
    from ..training.loop import train

    train(cfg)
    return 0
