"""Built-in policies. A policy is a plain class with ``decide(snapshot)``.

Policies are found by name in the entry-point group ``nalar_plugin.policies``
(``nalar policies`` lists them). The first line of a policy's docstring is its
summary.
"""

from __future__ import annotations

from .decisions import Decision, Snapshot

__all__ = ["FCFSPolicy", "Policy"]


class Policy:
    """Base class of policies: every hook is a documented no-op.

    Subclasses override :meth:`decide`. ``name`` is set from the entry point.
    """

    name = "policy"

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        """Return the decisions for this tick; the base class decides nothing."""
        return []

    def __repr__(self) -> str:
        return f"<policy {self.name}>"


class FCFSPolicy(Policy):
    """First come, first served: static routes, no migration, no re-allocation."""

    name = "fcfs"
