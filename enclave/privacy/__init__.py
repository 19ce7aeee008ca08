"""The privacy layer of the worker (DESIGN §6): output modes, minimum group sizes, OpenDP.

``apply_output_spec`` enforces a signed ``OutputSpec`` on the runner's row-level table;
``cost`` holds the pure budget arithmetic; ``templates`` the ready-made bundles. Only
``enclave.privacy.dp`` imports OpenDP. See docs/privacy.md for the proofs.
"""

from enclave.privacy.aggregate import COUNT_COLUMN, NoiseInfo, PrivacyResult, apply_output_spec
from enclave.privacy.cost import estimate, remaining_after, run_cost

__all__ = [
    "COUNT_COLUMN",
    "NoiseInfo",
    "PrivacyResult",
    "apply_output_spec",
    "estimate",
    "remaining_after",
    "run_cost",
]
