"""Checks of user-supplied settings shared by every config: one ValueError naming the field.

Every helper takes the public field name first and raises ``ValueError("<name>: ...
got <value!r>")``, so a bad value anywhere reads the same and a message can be matched
with ``^<name>\\b``. Helpers return the value normalised (numpy scalars become Python
ones) for the caller to store. Numpy-only: every layer may import this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_json_object",
    "check_number",
    "check_options",
    "check_schedule",
    "check_str",
]


def _is_bool(value: object) -> bool:
    """True for Python and numpy booleans (which must not pass as numbers)."""
    return isinstance(value, (bool, np.bool_))


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    """Human-readable range, e.g. ``>= 0``, ``> 0`` or ``in (0, 1]``."""
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def check_int(name: str, value: object, *, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) in [lo, hi]."""
    rng = _range_text(lo, hi, False, False)
    what = f"an integer {rng}" if rng else "an integer"
    if _is_bool(value) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return v


def check_number(
    name: str,
    value: object,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as a float if it is a real number (not a bool, not NaN) in range.

    The range is [lo, hi], with ``lo_open`` / ``hi_open`` excluding an end; +-inf is
    rejected unless ``allow_inf`` (and then still has to lie in the range).
    """
    if _is_bool(value) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    below = lo is not None and (v < lo or (lo_open and v == lo))
    above = hi is not None and (v > hi or (hi_open and v == hi))
    if below or above:
        raise ValueError(f"{name}: must be {_range_text(lo, hi, lo_open, hi_open)}, got {value!r}")
    return v


def check_schedule(name: str, value: object) -> float | list[list[float]]:
    """Return a positive number, or an RLlib schedule ``[[timestep, value], ...]``, normalised.

    A schedule has two or more points, starts at timestep 0, its timesteps increase
    strictly and its values are positive; RLlib interpolates linearly between the points
    and keeps the last value. Whole-number timesteps become ints (``2e4`` -> 20000).
    """
    if not isinstance(value, (list, tuple)):
        return check_number(name, value, lo=0.0, lo_open=True)
    points: list[list[float]] = []
    for i, point in enumerate(value):
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise ValueError(f"{name}[{i}]: expected a [timestep, value] pair, got {point!r}")
        t = check_number(f"{name}[{i}][0] (timestep)", point[0], lo=0.0)
        t = int(t) if t.is_integer() else t
        points.append([t, check_number(f"{name}[{i}][1]", point[1], lo=0.0, lo_open=True)])
    if len(points) < 2 or points[0][0] != 0:
        raise ValueError(
            f"{name}: a schedule needs two or more [timestep, value] points from timestep 0, "
            f"got {value!r}"
        )
    if any(b[0] <= a[0] for a, b in zip(points, points[1:], strict=False)):
        raise ValueError(f"{name}: schedule timesteps must increase strictly, got {value!r}")
    return points


def check_json_object(name: str, text: str) -> dict[str, Any]:
    """Return the JSON object (a dict) that ``text`` spells, e.g. ``'{"p_drop": 0.1}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: expected a JSON object, not JSON ({e}), got {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a JSON object {{...}}, got {text!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` as a bool if it is one (0 / 1 and strings are not)."""
    if not _is_bool(value):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: object, choices: Iterable[Any]) -> Any:
    """Return the choice equal to ``value`` (same type, bools never stand in for ints)."""
    options = tuple(choices)
    for c in options:
        if isinstance(value, type(c)) and _is_bool(value) == _is_bool(c) and value == c:
            return c
    raise ValueError(f"{name}: expected one of {options}, got {value!r}")


def check_str(name: str, value: object, *, none_ok: bool = False) -> str | None:
    """Return ``value`` if it is a non-empty string (or None when ``none_ok``)."""
    if value is None and none_ok:
        return None
    if not isinstance(value, str) or not value:
        what = "a non-empty string or None" if none_ok else "a non-empty string"
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return value


def check_options(name: str, value: object, allowed: Collection[str]) -> dict[str, Any]:
    """Return ``value`` as a dict if it is a mapping whose keys are all in ``allowed``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a dict with keys from {sorted(allowed)}, got {value!r}")
    unknown = sorted(map(repr, set(value) - set(allowed)))
    if unknown:
        raise ValueError(
            f"{name}: unknown key(s) {', '.join(unknown)}; expected some of {sorted(allowed)}, "
            f"got {dict(value)!r}"
        )
    return dict(value)
