"""Policies composed by name: ``"least_loaded+autoscale:max_instances=4"``.

``Runtime(policy=...)``, ``rt.set_policy(...)``, the scheduler's global controller and
``nalar bench`` read a policy spec through :func:`compose`: installed policies joined
by ``+``, each with optional constructor arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .decisions import Decision, Snapshot
from .policies import Policy

__all__ = ["CompositePolicy", "compose"]


class CompositePolicy(Policy):
    """Several policies as one: the first ``choose`` that picks wins; decisions are concatenated."""

    def __init__(self, name: str, members: Sequence[Any]) -> None:
        self.name = name
        self.members = list(members)

    def choose(self, component: str, candidates: Sequence[Any]) -> Any | None:
        for member in self.members:
            picked = member.choose(component, candidates)
            if picked is not None:
                return picked
        return None

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        out: list[Decision] = []
        for member in self.members:
            out.extend(member.decide(snapshot) or [])
        return out


def _value(raw: str) -> Any:
    raw = raw.strip()
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _member(plugins: Any, spec: str) -> Any:
    """One installed policy from ``name`` or ``name:key=value,key=value`` (constructor arguments).

    ``;`` separates arguments too, so a spec fits in a comma-separated list
    (``nalar bench --systems "langgraph,nalar@nalar:lend=0;gain=1"``).

    Raises:
        ConfigError: A malformed argument.
    """
    name, _, args = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for pair in filter(None, (a.strip() for a in args.replace(";", ",").split(","))):
        key, eq, raw = pair.partition("=")
        if not eq:
            raise ConfigError(f"policy argument {pair!r} of {spec!r} is not key=value")
        kwargs[key.strip()] = _value(raw)
    obj = plugins.policy(name.strip(), **kwargs)
    obj.name = name.strip()
    return obj


def compose(plugins: Any, spec: str) -> Any:
    """The policy object for ``spec``: installed policies joined by ``+``, each ``name`` or ``name:k=v,...``.

    A plain name is that policy, as ``plugins.policy(name)`` makes it. Argument values
    are numbers when they read as numbers, else strings.

    Args:
        plugins: The :class:`~nalar_plugin.plugins.PluginManager` that finds policies.
        spec: For example ``"least_loaded+autoscale:max_instances=4"``.

    Raises:
        ConfigError: A malformed argument.
        PolicyNotFoundError: A member is not installed.
    """
    if "+" not in spec and ":" not in spec:
        obj = plugins.policy(spec)
        obj.name = spec
        return obj
    members = [_member(plugins, m) for m in spec.split("+") if m.strip()]
    if len(members) == 1:
        members[0].name = spec
        return members[0]
    return CompositePolicy(spec, members)
