"""Response actions shared by every layer, ordered by severity."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Action(IntEnum):
    """A replica's response to one event; the integer order is the severity order."""

    ALLOW = 0
    ALERT = 1
    BLOCK = 2
    QUARANTINE = 3


N_ACTIONS = len(Action)
ACTION_NAMES: tuple[str, ...] = tuple(a.name.lower() for a in Action)


def is_restrictive(action: int | np.ndarray) -> bool | np.ndarray:
    """True where an action blocks or quarantines, i.e. counts as detecting a threat."""
    return action >= Action.BLOCK


def parse_action(value: int | str, field: str) -> int:
    """Turn an action name or index into its index; raise ValueError naming `field`."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key not in ACTION_NAMES:
            raise ValueError(f"{field}: unknown action {value!r}; expected one of {ACTION_NAMES}")
        return ACTION_NAMES.index(key)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < N_ACTIONS:
            return int(value)
    raise ValueError(f"{field}: action must be a name in {ACTION_NAMES} or 0..3, got {value!r}")
