"""The privacy layer of the worker (DESIGN §6): output modes, minimum group sizes, OpenDP.

``apply_output_spec`` enforces a signed ``OutputSpec`` on the runner's row-level table;
``postprocess`` derives a template's headline figures from its released table. The rules parties
and the worker share live in ``sdk.protocol``: budget arithmetic in ``budget``, the effective
minimum group size in ``policy``, template code and specs in ``templates``. Only
``enclave.privacy.dp`` imports OpenDP. See docs/privacy.md for the proofs.
"""

from enclave.privacy._post import postprocess
from enclave.privacy.aggregate import (
    COUNT_COLUMN,
    NoiseInfo,
    PrivacyResult,
    apply_output_spec,
    release_groups,
)

__all__ = [
    "COUNT_COLUMN",
    "NoiseInfo",
    "PrivacyResult",
    "apply_output_spec",
    "postprocess",
    "release_groups",
]
