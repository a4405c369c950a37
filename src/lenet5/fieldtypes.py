"""Values checked against a dataclass's field types and ranges, in one line when they are wrong.

A field declares what it accepts in two places only: its type hint (``int``, ``float``,
``bool``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[int, ...]``, ``dict``) and, through
:func:`setting`, its ``metadata``: help text, bounds (``ge``, ``gt``, ``le``, ``lt``) and, where
the choices are not known statically, ``choices``. From those come the checks (:func:`check`),
the parsing of command-line text (:func:`parse_text`) and the description of what is allowed
(:func:`describe`), so a flag, a ``--set KEY=VALUE``, a TOML value and a checkpoint's saved
config are all held to the same rule.

The rules are strict where a loose reading would train something else: ``true`` is not an
integer (``batch_size=true`` used to train at batch 1), ``2.5`` is not an integer, a float
must be finite, and an integer is accepted where a float is expected. Standard library only.
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from dataclasses import MISSING, Field, field, fields
from typing import Any, Literal, Union, get_args, get_origin


def setting(default: Any = MISSING, *, help: str, default_factory: Any = MISSING,  # noqa: A002
            ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, choices: Any = None, flag: bool = True) -> Any:
    """A dataclass field with what :func:`check` enforces and ``--help`` says.

    ``choices``: a tuple, or a function returning one (for names registered at run time);
    ``flag``: whether ``lenet5 train`` offers it as ``--name`` (it is always settable by
    ``--set`` and in TOML)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "flag": flag}
    return field(default=default, default_factory=default_factory, metadata=meta)


class FieldError(ValueError):
    """A value a field does not accept; the message names the field and what it allows."""


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint (the modules use ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def field_map(cls: type) -> dict[str, Field]:
    return {f.name: f for f in fields(cls)}


def show(value: Any, limit: int = 80) -> str:
    """A value as the user would type it (JSON: ``true``, ``"ten"``, ``[6, 16]``), shortened
    to ``limit`` characters (an error line echoes it)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        try:
            text = repr(value)
        except ValueError:  # an integer of more than 4,300 digits
            text = "a number too long to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- types


def _optional(hint: Any) -> tuple[bool, Any]:
    """``(allows None, the hint without None)``."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) < len(get_args(hint)):
            return True, args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
    return False, hint


def choices_of(hint: Any, meta: dict) -> tuple | None:
    choices = meta.get("choices")
    if callable(choices):
        choices = choices()
    if choices is not None:
        return tuple(choices)
    _, inner = _optional(hint)
    return get_args(inner) if get_origin(inner) is Literal else None


def _bounds(meta: dict) -> str:
    ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
    lower = f">= {ge}" if ge is not None else f"> {gt}" if gt is not None else ""
    upper = f"<= {le}" if le is not None else f"< {lt}" if lt is not None else ""
    return " and ".join(b for b in (lower, upper) if b)


def describe(hint: Any, meta: dict | None = None) -> str:
    """What a field allows, in words: ``an integer >= 1``, ``one of sgd, adam``, ..."""
    meta = meta or {}
    optional, inner = _optional(hint)
    choices = choices_of(hint, meta)
    bounds = _bounds(meta)
    if choices is not None:
        text = "one of " + ", ".join(map(str, choices))
    elif inner is bool:
        text = "true or false"
    elif inner is int:
        text = "an integer" + (f" {bounds}" if bounds else "")
    elif inner is float:
        text = "a finite number" + (f" {bounds}" if bounds else "")
    elif inner is str:
        text = "a string"
    elif get_origin(inner) is tuple:
        args = get_args(inner)
        item = describe(args[0], meta)
        count = "any number of" if len(args) == 2 and args[1] is Ellipsis else str(len(args))
        text = f"a list of {count} items, each {item}"
    elif get_origin(inner) is dict or inner is dict:
        text = "a table of NAME = VALUE"
    else:
        text = "any value"
    return text + (" (or null)" if optional else "")


def check(name: str, hint: Any, value: Any, meta: dict | None = None) -> Any:
    """``value`` if ``hint`` and ``meta`` allow it (ints given for floats become floats);
    otherwise :class:`FieldError` naming ``name`` and what it allows."""
    meta = meta or {}
    optional, inner = _optional(hint)
    if value is None and optional:
        return None
    ok, value = _conforms(inner, value, meta)
    if not ok:
        raise FieldError(f"{name} must be {describe(hint, meta)}; got {show(value)}")
    return value


def _conforms(hint: Any, value: Any, meta: dict) -> tuple[bool, Any]:
    choices = choices_of(hint, meta)
    if choices is not None:
        return (type(value) is not bool and value in choices), value
    if hint is bool:
        return type(value) is bool, value
    if hint is int:
        return type(value) is int and _in_bounds(value, meta), value
    if hint is float:
        ok = type(value) in (int, float) and math.isfinite(value) and _in_bounds(value, meta)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if get_origin(hint) is tuple:
        args = get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False, value
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            return False, value
        checked = [_conforms(h, v, meta) for h, v in zip(items, value)]
        return all(ok for ok, _ in checked), tuple(v for _, v in checked)
    if get_origin(hint) is dict or hint is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value), value
    return True, value  # Any


def _in_bounds(x: float, meta: dict) -> bool:
    ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
    return ((ge is None or x >= ge) and (gt is None or x > gt)
            and (le is None or x <= le) and (lt is None or x < lt))


def check_values(cls: type, values: dict[str, Any], prefix: str = "",
                 extra_meta: dict[str, dict] | None = None, noun: str = "setting") -> dict[str, Any]:
    """Every ``values[name]`` checked against ``cls``'s field of that name (unknown names are an
    error); returns the checked values. ``extra_meta`` adds bounds to fields by name."""
    known, types_ = field_map(cls), hints(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FieldError(unknown_message(prefix, unknown, known, noun))
    out = {}
    for name, value in values.items():
        meta = {**known[name].metadata, **(extra_meta or {}).get(name, {})}
        out[name] = check(prefix + name, types_[name], value, meta)
    return out


def unknown_message(prefix: str, unknown: list[str], known, noun: str = "setting") -> str:
    import difflib

    guesses = [m for u in unknown for m in difflib.get_close_matches(u, list(known), 1)]
    hint = f" (did you mean {', '.join(prefix + g for g in guesses)}?)" if guesses else ""
    return (f"unknown {noun}(s) {', '.join(prefix + u for u in unknown)}{hint}; "
            f"known: {', '.join(prefix + k for k in known)}")


# ----------------------------------------------------------------------------- text


def parse_text(hint: Any, raw: str) -> Any:
    """Command-line text as a value for a field typed ``hint`` (then give it to :func:`check`).

    Text fields take the text as it is (or a JSON string, so ``"..."`` round-trips); other
    fields read it as JSON (``true``, ``3``, ``0.5``, ``[6, 16, 120, 84]``, ``null``), with
    ``True``/``False`` also read as booleans and ``.5`` as a number. What does not parse stays
    text, so :func:`check` names it in its error."""
    optional, inner = _optional(hint)
    if optional and raw in ("null", "None"):
        return None
    if inner is str or (get_origin(inner) is Literal and all(isinstance(a, str) for a in get_args(inner))):
        if raw.startswith('"'):
            try:
                return json.loads(raw)
            except ValueError:
                pass
        return raw
    if inner is bool and raw in ("True", "False"):
        return raw == "True"
    try:
        return json.loads(raw)
    except ValueError:  # not JSON, or an integer of more than 4,300 digits
        pass
    if inner is float:
        try:
            return float(raw)  # ".5", "5."; NaN and infinities are refused by check()
        except ValueError:
            pass
    return raw
