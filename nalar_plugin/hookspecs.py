"""The pluggy contract of nalar-plugin: every hook, in one module.

Hooks are called with keyword arguments only, so an implementation may accept
just the arguments it needs. Each docstring says when the hook is called, whether
it is *firstresult*, what returning ``None`` means, and whether it is an
*observer* hook (a failure is logged and contained) or a *decision* hook (a
failure reaches the caller).

Plugins are registered with :meth:`nalar_plugin.Runtime.register_plugin` or by
the setuptools entry-point group ``nalar_plugin``; they are validated when they
are registered. Policies come from the entry-point group
``nalar_plugin.policies`` and from :func:`nalar_add_policies`.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["hookimpl", "hookspec"]

PROJECT = "nalar"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def nalar_add_policies() -> dict[str, type]:  # type: ignore[empty-body]
    """Called when the policy registry is built; return ``{name: PolicyClass}``.

    Not firstresult: the mappings of every plugin are merged. Returning ``None``
    adds nothing. Decision hook: a failure reaches the caller.
    """


@hookspec
def nalar_runtime_started(runtime: Any) -> None:
    """Called once a Runtime has its cluster, controllers and plugins ready.

    Observer hook: failures are logged and contained. The return value is ignored.
    """


@hookspec
def nalar_runtime_closing(runtime: Any) -> None:
    """Called when a Runtime starts to close, before the cluster is released.

    Observer hook: failures are logged and contained. The return value is ignored.
    """


@hookspec(firstresult=True)
def nalar_call_veto(call: Any) -> str | None:
    """Called when a call is made, before it is queued; return a reason to refuse it.

    firstresult: the first non-``None`` string vetoes the call, whose future then
    fails with :class:`~nalar_plugin.errors.CallVetoedError` carrying the reason.
    Returning ``None`` lets the call through. Decision hook: a failure reaches the
    caller (the future fails with it).
    """


@hookspec
def nalar_call_created(call: Any) -> None:
    """Called when a stub or adapter makes a call and its future exists.

    ``call.context`` holds the session, dependencies and the rest. Observer hook.
    """


@hookspec
def nalar_call_admitted(call: Any, instance: str) -> None:
    """Called when a local controller admits a call to ``instance`` (late binding).

    Observer hook: failures are logged and contained.
    """


@hookspec
def nalar_call_finished(call: Any, status: str, error: BaseException | None) -> None:
    """Called when a call's future resolves; ``status`` is ``finished``, ``error`` or ``cancelled``.

    Observer hook: failures are logged and contained.
    """


@hookspec
def nalar_tick(snapshot: Any, decisions: list[Any]) -> None:
    """Called after each global-controller tick with the snapshot and the decisions pushed.

    Observer hook: failures are logged and contained.
    """


@hookspec(firstresult=True)
def nalar_should_retry(call: Any, error: BaseException, attempt: int) -> bool | None:
    """Called when a call failed because its worker died or its task was lost.

    firstresult: ``True`` retries (under the journal), ``False`` fails the call.
    ``None`` leaves the decision to the configured retry limit. Decision hook.
    """


@hookspec(firstresult=True)
def nalar_provision(component: str, where: Any) -> str | None:
    """Called when a policy decides to add an instance of ``component``.

    ``where`` is an instance of another component whose resources move (``reallocate``),
    or ``None`` for a new instance (``autoscale``). firstresult: return the new
    instance's id; ``None`` means no provisioner could do it (the decision is dropped
    and logged). A new instance that is not ready yet is added warming (it admits
    nothing until it is). Decision hook.
    """


@hookspec(firstresult=True)
def nalar_kill(instance: str) -> bool | None:
    """Called when a policy decides to remove ``instance``.

    A provisioner drains the instance rather than dropping its calls: it stops
    admitting, its queued calls go back to the component's shared queue, and what
    it stands for is taken down once its admitted calls finish
    (``ControlPlane.remove_instance(instance, on_drained=...)``). firstresult:
    ``True`` when done; ``False`` when refused (the last instance of a component,
    one that is moving); ``None`` means no provisioner handled it. Decision hook.
    """


@hookspec(firstresult=True)
def nalar_adapter_route(kind: str, name: str, run: Any) -> bool | None:
    """Called when an adapter is about to make an intercepted LangChain call a nalar call.

    ``kind`` is ``"tool"`` or ``"model"``, ``name`` the component, ``run`` the
    run's context (session, priority, deadline, LangGraph node and step).
    firstresult: ``False`` runs the call in place, in the caller, outside nalar;
    ``True`` or ``None`` routes it through nalar. Decision hook: a failure
    reaches the caller.
    """


@hookspec
def nalar_adapter_run(run: Any) -> None:
    """Called when the LangChain callback handler records the start of a run.

    ``run`` is a record with the run id, parent run, kind, name, session and
    LangGraph node and step. Observer hook: failures are logged and contained.
    """


@hookspec(firstresult=True)
def nalar_endpoint(obj: Any, component: str, index: int) -> Any:
    """Called when ``rt.deploy`` (or ``rt.deploy_model``) makes ``obj`` instance ``index`` of ``component``.

    firstresult: return what the instance's calls get in place of ``obj`` (a
    wrapper that travels to workers, for example); ``None`` keeps ``obj``.
    Decision hook: a failure reaches the caller of ``deploy``.
    """
