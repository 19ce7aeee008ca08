"""Release policy rules parties and the worker must agree on: the minimum group size, and
the share of a run's epsilon spent on the measured match rate.

The worker suppresses every group with fewer distinct units than the *effective* minimum
group size; review shows the same number. Both call :func:`effective_min_group_size`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdk.protocol.models import Bundle, Manifest
    from sdk.protocol.spec import OutputSpec

DEFAULT_MIN_GROUP_SIZE = 50
"""The minimum group size of a room file, or of a dataset, that names none."""


def strictest(*sizes: int | None) -> int:
    """The one way sizes combine: the largest given (``None`` ignored), and at least 1."""
    return max([1, *(s for s in sizes if s is not None)])


def effective_min_group_size(manifest: Manifest, bundle: Bundle) -> int:
    """The minimum group size a run of ``bundle`` enforces: the strictest of the room's
    default, every dataset the bundle reads, and the bundle's own output spec.

    Raises ``InputError`` when the bundle reads a dataset the manifest does not declare.
    """
    return strictest(
        manifest.default_min_group_size,
        *(manifest.dataset(name).min_group_size for name in bundle.datasets),
        bundle.output.min_group_size,
    )


def list_min_size(min_group_size: int, spec: OutputSpec) -> int:
    """The smallest list a list-mode run may release: the effective minimum group size, or the
    spec's ``list_min_size`` when larger."""
    return strictest(min_group_size, spec.list_min_size)


MATCH_RATE_EPSILON_SHARE = Decimal("0.1")
"""The share of a DP run's epsilon spent on its measured match rate (the rest goes to the
cells), when the plan joins two or more inputs."""


def match_rate_epsilon(bundle: Bundle) -> Decimal:
    """The epsilon a run of ``bundle`` spends on its match rate: :data:`MATCH_RATE_EPSILON_SHARE`
    of its epsilon for a DP plan that joins; 0 otherwise (no DP: exact, thresholded; no join
    or custom code: no match rate)."""
    plan = bundle.plan
    if plan is None or len(plan.inputs) < 2 or bundle.output.dp is None:
        return Decimal(0)
    return bundle.output.epsilon * MATCH_RATE_EPSILON_SHARE


def measures_match_rate(bundle: Bundle) -> bool:
    """Whether runs of ``bundle`` measure and release a match rate: plans that join."""
    return bundle.plan is not None and len(bundle.plan.inputs) >= 2
