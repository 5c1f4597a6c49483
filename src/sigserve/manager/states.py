"""ServableState and the transitions between states that are legal, written down once
(tfserving-api.md §4 "States"; TF Serving's `core/servable_state.h`).

A version the manager tracks moves

    START ──► LOADING ──► AVAILABLE ──► UNLOADING ──► END
      │          │                                     ▲
      │          └──── load failed (error kept) ──────►│
      └──────────── no longer aspired before loading ─►┘

States only move forward ("from higher to lower ones on this list", servable_state.h). The one way
back is END → START: a version that was unloaded (or failed) and is then aspired again is tracked
anew, as TF Serving creates a new harness for it. Every transition the manager makes, and every
one the status monitor records, is checked against `TRANSITIONS`; any other is a bug in sigserve:
it is logged and refused (`IllegalTransition`), never applied.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Final

from sigserve.errors import Code, SigserveError

logger = logging.getLogger("sigserve.manager")


class ServableState(enum.IntEnum):
    """`ModelVersionStatus.State` numbers, so a state goes into the status proto unchanged."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


_S = ServableState

# {from: the states it may move to}; None is "not tracked yet".
TRANSITIONS: Final[Mapping[ServableState | None, frozenset[ServableState]]] = {
    None: frozenset({_S.START}),
    _S.START: frozenset({_S.LOADING, _S.END}),
    _S.LOADING: frozenset({_S.AVAILABLE, _S.END}),
    _S.AVAILABLE: frozenset({_S.UNLOADING}),
    _S.UNLOADING: frozenset({_S.END}),
    _S.END: frozenset({_S.START}),
}


class IllegalTransition(SigserveError):
    """A transition not in `TRANSITIONS`: a bug in the manager, never a user error."""

    def __init__(self, servable: str, old: ServableState | None, new: ServableState) -> None:
        allowed = ", ".join(s.name for s in sorted(TRANSITIONS[old]))
        before = old.name if old is not None else "(untracked)"
        super().__init__(
            Code.INTERNAL,
            f"Illegal servable state transition of {servable}: {before} -> {new.name} "
            f"(legal from {before}: {allowed})",
        )
        self.old = old
        self.new = new


def is_legal(old: ServableState | None, new: ServableState) -> bool:
    return new in TRANSITIONS[old]


def check_transition(servable: str, old: ServableState | None, new: ServableState) -> None:
    """Raise (and log) `IllegalTransition` unless `old` → `new` is legal. `servable` names the version
    in the message, e.g. "{name: m version: 1}"."""
    if new not in TRANSITIONS[old]:
        error = IllegalTransition(servable, old, new)
        logger.error("%s; refused (a bug in sigserve, please report it)", error.message)
        raise error
