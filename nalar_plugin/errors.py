"""The one exception tree of nalar-plugin.

Every error the project raises on purpose is a :class:`NalarError`. Errors from
Dask and diskcache are mapped at the boundary to the most specific class below,
with the original exception chained (``raise ... from exc``)::

    NalarError
    ├── ConfigError (ValueError)            bad configuration or keyword argument
    │   └── DirectiveError                  bad @agent/@tool directive value
    ├── PluginError                         a pluggy plugin is invalid
    │   └── PolicyNotFoundError (LookupError)
    ├── CallVetoedError                     a plugin refused the call
    ├── AdmissionRejectedError              the call would break its SLO: shed at admission
    ├── RuntimeStateError (RuntimeError)    no active Runtime, or a closed one
    ├── ClusterError                        the Dask cluster failed us
    │   ├── UnsatisfiableResourcesError     no worker can meet a resources= need
    │   ├── WorkerLostError                 a worker died while running a call
    │   └── CallCancelledError              the call's Dask task was cancelled
    ├── CallTimeoutError (TimeoutError)     value(timeout=...) ran out
    └── StateError                          the managed state store failed
        ├── SerializationError (TypeError)  a value cannot be serialised
        ├── StateCorruptedError             a corrupted or foreign state directory
        └── StateReadOnlyError (PermissionError)

An exception raised *inside* a call is not wrapped: ``result()`` re-raises it with
its original type and traceback.

Warnings (each said once per object or component)::

    NalarWarning (UserWarning)
    ├── InProcessWarning (nalar_plugin.adapters)  a call asked to travel runs where it lives
    └── UnjournaledWarning                         a result the journal cannot store
"""

from __future__ import annotations

__all__ = [
    "AdmissionRejectedError",
    "CallCancelledError",
    "CallTimeoutError",
    "CallVetoedError",
    "ClusterError",
    "ConfigError",
    "DirectiveError",
    "NalarError",
    "NalarWarning",
    "PluginError",
    "PolicyNotFoundError",
    "RuntimeStateError",
    "SerializationError",
    "StateCorruptedError",
    "StateError",
    "StateReadOnlyError",
    "UnjournaledWarning",
    "UnsatisfiableResourcesError",
    "WorkerLostError",
]


class NalarError(Exception):
    """Base class of every error nalar-plugin raises on purpose."""


class ConfigError(NalarError, ValueError):
    """A configuration value or keyword argument is invalid."""


class DirectiveError(ConfigError):
    """A stub directive (``stateful``, ``resources``, ...) has a bad value."""


class PluginError(NalarError):
    """A plugin failed validation when it was registered."""


class PolicyNotFoundError(PluginError, LookupError):
    """No installed policy has the requested name."""


class CallVetoedError(NalarError):
    """A plugin's ``nalar_call_veto`` hook refused the call."""


class AdmissionRejectedError(NalarError):
    """The controllers shed the call at admission: its expected wait would break its SLO.

    Raised (from the call's future) at once, before the call waits anywhere, so the
    app can answer "busy", retry later or degrade. A caller that prefers to wait
    asks for deferral instead (``on_slo="defer"``).

    Attributes:
        component: The component called.
        expected_s: The expected time to the call's completion (wait plus service), wall seconds.
        slo_s: The budget it would break, wall seconds (the SLO, or what is left to the deadline).
    """

    def __init__(self, message: str, *, component: str = "", expected_s: float = 0.0, slo_s: float = 0.0) -> None:
        super().__init__(message)
        self.component = component
        self.expected_s = expected_s
        self.slo_s = slo_s

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle with the attributes (the error may travel between processes)."""
        return (_rejected, (str(self), self.component, self.expected_s, self.slo_s))


def _rejected(message: str, component: str, expected_s: float, slo_s: float) -> AdmissionRejectedError:
    return AdmissionRejectedError(message, component=component, expected_s=expected_s, slo_s=slo_s)


class RuntimeStateError(NalarError, RuntimeError):
    """The operation needs an active Runtime, or the Runtime is closed."""


class ClusterError(NalarError):
    """The Dask cluster could not be reached or failed to run a call."""


class UnsatisfiableResourcesError(ClusterError):
    """A call asks for ``resources=`` that no worker in the cluster offers."""


class WorkerLostError(ClusterError):
    """The worker running a call died (Dask ``KilledWorker``)."""


class CallCancelledError(ClusterError):
    """The call was cancelled before it produced a result."""


class CallTimeoutError(NalarError, TimeoutError):
    """Waiting for a future's value took longer than the timeout."""


class StateError(NalarError):
    """The managed state store failed."""


class SerializationError(StateError, TypeError):
    """A value cannot be serialised by the store's ``serde``."""


class StateCorruptedError(StateError):
    """The state directory is corrupted or was not made by nalar-plugin."""


class StateReadOnlyError(StateError, PermissionError):
    """The state directory cannot be written."""


class NalarWarning(UserWarning):
    """Base class of the warnings nalar-plugin gives."""


class UnjournaledWarning(NalarWarning):
    """A LangChain tool or model call returned a value the journal cannot store.

    The app gets the value as it would without nalar; the call is not recorded,
    so a resumed run runs it again. Declare the component ``idempotent=True``
    (``rt.callback(directives=...)``) to say that is fine, or return data the
    state serde can encode.
    """
