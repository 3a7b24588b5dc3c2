"""The plugin manager: registration with validation, hook calling, policy lookup."""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, PolicyNotFoundError

__all__ = ["PLUGIN_GROUP", "POLICY_GROUP", "PluginManager", "installed_policies", "policy_entry_points"]

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "nalar_plugin"
POLICY_GROUP = "nalar_plugin.policies"


class PluginManager:
    """A pluggy manager for the ``nalar`` project that validates on registration."""

    def __init__(self, *, load_entrypoints: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        if load_entrypoints:
            try:
                count = self.pm.load_setuptools_entrypoints(PLUGIN_GROUP)
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"entry point plugin {exc.plugin!r} is invalid: {exc}") from exc
            logger.debug("loaded %d plugin(s) from entry-point group %s", count, PLUGIN_GROUP)
            self._check()

    @property
    def hook(self) -> Any:
        """The pluggy hook relay; call hooks with keyword arguments only."""
        return self.pm.hook

    def implemented(self, hook_name: str) -> bool:
        """Whether any registered plugin implements ``hook_name`` (so a hot path can skip the call)."""
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register ``plugin`` and validate its hooks at once.

        Raises:
            PluginError: A hook name starting with ``nalar_`` is unknown, or its
                signature asks for arguments the hook does not have. The message
                names the plugin, the hook and the signature.
        """
        try:
            registered = self.pm.register(plugin, name)
        except pluggy.PluginValidationError as exc:
            detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
            raise PluginError(f"plugin {_label(plugin)} is invalid: {detail}") from exc
        except ValueError as exc:
            raise PluginError(f"plugin {_label(plugin)} cannot be registered: {exc}") from exc
        if registered is None:
            raise PluginError(f"plugin {_label(plugin)} is blocked")
        try:
            self._check()
        except PluginError:
            self.pm.unregister(plugin)
            raise
        return registered

    def _check(self) -> None:
        for name in dir(self.pm.hook):
            if not name.startswith("nalar_"):
                continue
            caller = getattr(self.pm.hook, name)
            if caller.spec is not None:
                continue
            impls = caller.get_hookimpls()
            owners = ", ".join(_label(i.plugin) for i in impls)
            signatures = ", ".join(f"{name}{inspect.signature(i.function)}" for i in impls)
            raise PluginError(
                f"plugin {owners} implements unknown hook {signatures}; "
                f"known hooks: {', '.join(sorted(_spec_names()))}"
            )

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an observer hook: each implementation's failure is logged and contained."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:
                logger.exception("observer hook %s of plugin %s failed", hook_name, impl.plugin_name)

    def policies(self) -> dict[str, type]:
        """Return every installed policy, by name: entry points, then plugins.

        Raises:
            PluginError: An entry point fails to load (the message names it).
        """
        found = installed_policies()
        found.update(self._plugin_policies())
        return found

    def _plugin_policies(self) -> dict[str, type]:
        found: dict[str, type] = {}
        for mapping in self.pm.hook.nalar_add_policies():
            for name, cls in (mapping or {}).items():
                found[name] = _validate_policy(name, cls, "plugin")
        return found

    def policy(self, name: str, **kwargs: Any) -> Any:
        """Instantiate the policy called ``name``, loading only that entry point.

        A broken entry point of another policy does not stop this one.

        Raises:
            PolicyNotFoundError: No such policy; the message lists the installed ones.
            PluginError: The named entry point fails to load.
        """
        plugin_made = self._plugin_policies()
        if name in plugin_made:
            return plugin_made[name](**kwargs)
        for ep in importlib.metadata.entry_points(group=POLICY_GROUP):
            if ep.name == name:
                return _load_policy(ep)(**kwargs)
        names = sorted({ep.name for ep in importlib.metadata.entry_points(group=POLICY_GROUP)} | set(plugin_made))
        listing = ", ".join(names) or "(none)"
        raise PolicyNotFoundError(f"no policy named {name!r}; installed policies: {listing}")


def _label(plugin: Any) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _spec_names() -> list[str]:
    return [n for n in dir(hookspecs) if n.startswith("nalar_")]


def _validate_policy(name: str, cls: Any, origin: str) -> type:
    decide = getattr(cls, "decide", None)
    if not inspect.isclass(cls) or not callable(decide):
        raise PluginError(f"policy {name!r} from {origin} must be a class with a decide(snapshot) method, got {cls!r}")
    try:
        inspect.signature(decide).bind(None, None)
    except TypeError as exc:
        raise PluginError(
            f"policy {name!r} from {origin}: decide{inspect.signature(decide)} must accept (self, snapshot)"
        ) from exc
    return cls


def installed_policies() -> dict[str, type]:
    """Load every policy of the entry-point group ``nalar_plugin.policies``.

    Raises:
        PluginError: An entry point fails to import or is not a policy class.
    """
    found: dict[str, type] = {}
    for ep in importlib.metadata.entry_points(group=POLICY_GROUP):
        found[ep.name] = _load_policy(ep)
    return found


def _load_policy(ep: Any) -> type:
    try:
        cls = ep.load()
    except Exception as exc:
        raise PluginError(f"policy entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    return _validate_policy(ep.name, cls, f"entry point {ep.value}")


def policy_entry_points() -> list[tuple[str, type | None, str | None]]:
    """Every policy entry point: ``(name, class, None)``, or ``(name, None, error)`` for a broken one."""
    out: list[tuple[str, type | None, str | None]] = []
    for ep in importlib.metadata.entry_points(group=POLICY_GROUP):
        try:
            out.append((ep.name, _load_policy(ep), None))
        except PluginError as exc:
            out.append((ep.name, None, str(exc)))
    return out
