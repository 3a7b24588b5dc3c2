"""The base class of policies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .decisions import Decision, Snapshot


class Policy:
    """Base class of policies: every hook is a documented no-op.

    ``name`` is set from the entry point that loaded the policy.
    """

    name = "policy"
    # Local enforcement of affinity: a call bound to its session's instance moves
    # to a less loaded one when that instance is full and the other has more than
    # this many calls (or a quarter of the capacity) less. ``None``: it never does.
    affinity_slack: int | None = None

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        """Return this tick's decisions (called by the global controller); none by default."""
        return []

    def choose(self, component: str, candidates: Sequence[Any]) -> Any | None:
        """Pick the instance for an unbound call among free local controllers.

        Called at admission with the free instances' local controllers (each has
        ``instance``, ``in_flight``, ``capacity`` and ``queue``). ``None`` keeps the
        default (route weights, else round robin).
        """
        return None

    def __repr__(self) -> str:
        return f"<policy {self.name}>"
