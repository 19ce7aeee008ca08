"""The keyless query runner: a fresh, rlimited process that runs one Python or SQL bundle.

Public API (importing this package is cheap; engines load in the child only)::

    run_query(kind, code, tables, params, limits) -> pyarrow.Table
    RunnerLimits, RunnerError, error codes

See :mod:`enclave.runner.client` (supervisor side), :mod:`enclave.runner.child` (the process),
:mod:`enclave.runner.policy` and :mod:`enclave.runner.pysandbox` (Python bundles),
:mod:`enclave.runner.facade` (what Python bundles see) and :mod:`enclave.runner.sqlengine`
(SQL bundles).
"""

from typing import TYPE_CHECKING, Any

from enclave.runner.errors import (
    CODES,
    E_CONFIG,
    E_INPUT,
    E_INTERNAL,
    E_QUERY_REJECTED,
    E_QUERY_RUNTIME,
    E_RESOURCE,
    RunnerError,
)
from enclave.runner.limits import RunnerLimits

if TYPE_CHECKING:  # pragma: no cover
    from enclave.runner.client import run_query
else:

    def __getattr__(name: str) -> Any:
        # Lazy: the runner child imports this package and must not pay for the client side.
        if name == "run_query":
            from enclave.runner.client import run_query

            return run_query
        raise AttributeError(name)


__all__ = [
    "CODES",
    "E_CONFIG",
    "E_INPUT",
    "E_INTERNAL",
    "E_QUERY_REJECTED",
    "E_QUERY_RUNTIME",
    "E_RESOURCE",
    "RunnerError",
    "RunnerLimits",
    "run_query",
]
