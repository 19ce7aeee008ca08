"""The runner's error type and its stable codes.

Every failure of :func:`enclave.runner.run_query` is a :class:`RunnerError` with one ``code``:

``E_QUERY_REJECTED``
    The query code was refused before it ran (size cap, syntax, RestrictedPython policy, SQL
    statement policy, binding). The message may quote compile errors, which describe the code,
    never the data.
``E_QUERY_RUNTIME``
    The query raised while running. The message is only the exception type name and, for Python
    bundles, the line number in the query code: never ``str(exception)``, which may hold cell
    values.
``E_RESOURCE``
    A limit was hit: wall-clock deadline, CPU seconds, memory, output size or rows, or the runner
    was killed by a signal.
``E_INPUT``
    An input table is not valid Parquet or exceeds the declared row, column or size caps.
``E_CONFIG``
    The sandbox was assembled wrongly (for example exec globals without an explicit
    ``__builtins__``); a programming error of sealroom, never of a party.
``E_INTERNAL``
    The runner process ended without a well-formed result (a bug, not the query's fault).

Messages are static or built from code, names and counts only; never from data values.
"""

from __future__ import annotations

from typing import Final

E_QUERY_REJECTED: Final = "E_QUERY_REJECTED"
E_QUERY_RUNTIME: Final = "E_QUERY_RUNTIME"
E_RESOURCE: Final = "E_RESOURCE"
E_INPUT: Final = "E_INPUT"
E_CONFIG: Final = "E_CONFIG"
E_INTERNAL: Final = "E_INTERNAL"

CODES: Final = frozenset(
    {E_QUERY_REJECTED, E_QUERY_RUNTIME, E_RESOURCE, E_INPUT, E_CONFIG, E_INTERNAL}
)

#: Longest message a RunnerError carries; longer ones are cut.
MAX_MESSAGE_CHARS: Final = 4096


class RunnerError(Exception):
    """A query run failed; ``code`` says how, ``message`` is safe to show to parties.

    To be re-parented under ``sdk.errors.SealroomError`` by the lead; until then it stands alone.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown runner error code {code!r}")
        message = message[:MAX_MESSAGE_CHARS]
        super().__init__(f"{code}: {message}")
        self.code: str = code
        self.message: str = message
