"""The job directory's layout (docs/job-protocol.md): file names and size caps, defined once.

The coordinator writes a job directory with these names; the worker reads it back with these
caps, checked before anything is parsed. Neither side types a file name out on its own.
"""

from __future__ import annotations

from pathlib import PurePath

from sdk.protocol.dsse import MAX_ENVELOPE_BYTES

JOB_META = "job.json"
MANIFEST = "manifest.json"
ATTESTATIONS = "attestations.json"
BUNDLE = "bundle.json"
APPROVALS = "approvals.json"
UPLOADS = "uploads.json"
DATA_DIR = "data"
LOG_DIR = "log"
LOG_ENTRIES = "log/entries.json"
LOG_CHECKPOINT = "log/checkpoint.json"
SECRETS_DIR = "secrets"
SEALED_SUFFIX = ".sealed"
GO_FILE = ".go"
"""A worker started ahead of its job (``run --wait-for-go``) waits for this file: the launcher
writes it last, after the job files and the secrets are in place."""

# The secrets a launcher hands over under SECRETS_DIR, after it has checked the isolation
# (file names, not secrets themselves).
PLATFORM_KEY_SECRET = "platform.key"  # noqa: S105 - the platform's 32-byte Ed25519 seed
SEALED_WORKER_KEY_SECRET = "worker.sealed"  # noqa: S105 - the worker keys, sealed at rest
ISOLATION_DIGEST_SECRET = "isolation.digest"  # noqa: S105 - digest of the inspected settings

MAX_JOB_META_BYTES = 4096
MAX_ENVELOPE_FILE_BYTES = MAX_ENVELOPE_BYTES
MAX_LIST_BYTES = 64 * 1024 * 1024
MAX_SECRET_BYTES = 4096
MAX_ATTESTATIONS = 1024
MAX_APPROVALS = 256
MAX_UPLOADS = 256
MAX_LOG_ENTRIES = 1_000_000


def sealed_name(ciphertext_digest: str) -> str:
    """The path, relative to the job root, of one upload's ciphertext."""
    return str(PurePath(DATA_DIR) / f"{ciphertext_digest}{SEALED_SUFFIX}")


def secret_name(name: str) -> str:
    """The path, relative to the job root, of a secret the launcher hands over."""
    return str(PurePath(SECRETS_DIR) / name)
