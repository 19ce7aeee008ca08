"""The privacy layer of the worker (DESIGN §6): output modes, minimum group sizes, OpenDP.

``apply_output_spec`` enforces a signed ``OutputSpec`` on the runner's row-level table;
``postprocess`` derives a template's headline figures from its released table. The rules parties
and the worker share live in ``sdk.protocol``: budget arithmetic in ``budget``, the effective
minimum group size in ``policy``, template code and specs in ``templates``. Only
``enclave.privacy.dp`` imports OpenDP. See docs/privacy.md for the proofs.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from enclave.privacy._post import postprocess
    from enclave.privacy.aggregate import (
        COUNT_COLUMN,
        NoiseInfo,
        PrivacyResult,
        apply_output_spec,
        release_groups,
    )
else:
    _HOMES = {"postprocess": "enclave.privacy._post"}

    def __getattr__(name: str) -> Any:
        # Lazy (PEP 562): the worker's verify step imports the fixed-point encoding without
        # paying for OpenDP, DuckDB and numpy, which load when a release needs them.
        if name in __all__:
            import importlib

            module = importlib.import_module(_HOMES.get(name, "enclave.privacy.aggregate"))
            return getattr(module, name)
        raise AttributeError(name)


__all__ = [
    "COUNT_COLUMN",
    "NoiseInfo",
    "PrivacyResult",
    "apply_output_spec",
    "postprocess",
    "release_groups",
]
