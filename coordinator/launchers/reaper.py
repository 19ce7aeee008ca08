"""Remove worker containers left behind by a coordinator that crashed mid-run.

Containers are found by label (``sealroom.owner=sealroom``, optionally one coordinator
``sealroom.instance``), never by name or image, so nothing else on the host is touched.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from coordinator.launchers.profile import LABEL_INSTANCE, LABEL_OWNER, LABEL_RUN_ID, OWNER


def reap_orphans(client: Any, *, instance: str | None = None,
                 keep_run_ids: Collection[str] = ()) -> list[str]:
    """Force-remove every sealroom worker container (of ``instance``, when given) whose run id
    is not in ``keep_run_ids``; return the ids removed.

    Call it at coordinator start-up with no runs to keep, or periodically with the runs in
    flight. Containers that vanish meanwhile are skipped; engine errors propagate.
    """
    import docker.errors

    filters = [f"{LABEL_OWNER}={OWNER}"]
    if instance is not None:
        filters.append(f"{LABEL_INSTANCE}={instance}")
    removed = []
    for summary in client.api.containers(all=True, filters={"label": filters}):
        labels = summary.get("Labels") or {}
        if labels.get(LABEL_OWNER) != OWNER or labels.get(LABEL_RUN_ID) in keep_run_ids:
            continue
        try:
            client.api.remove_container(summary["Id"], force=True, v=True)
        except docker.errors.NotFound:
            continue
        removed.append(str(summary["Id"]))
    return removed
