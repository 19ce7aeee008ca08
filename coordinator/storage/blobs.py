"""A content-addressed blob store on disk: ``<root>/<aa>/<sha256>``.

A blob becomes visible only complete: bytes go to a temp file in the blob's own directory,
are fsynced, renamed onto the final name, and the directory is fsynced. A crash at any point
leaves either no blob or the whole blob (stale temp files are removed at start-up). Files are
0644 and directories 0755 so a worker running as another uid (65534) can read the hard links
in its read-only job directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path

from coordinator.errors import PayloadTooLarge
from sdk.errors import InputError, NotFoundError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
TMP_PREFIX = ".tmp-"
FILE_MODE = 0o644
DIR_MODE = 0o755


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_digest(digest: str) -> str:
    """``digest`` when it is lowercase hex SHA-256; raises ``InputError`` otherwise."""
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise InputError("expected a lowercase hex SHA-256 digest")
    return digest


class BlobWriter:
    """Streams one blob into a temp file while hashing it; :meth:`commit` publishes it.

    ``expected_size`` caps what is accepted (``PayloadTooLarge`` beyond it). Use as a context
    manager: leaving without a commit removes the temp file.
    """

    def __init__(self, store: BlobStore, expected_digest: str, expected_size: int) -> None:
        self.store = store
        self.expected_digest = check_digest(expected_digest)
        self.expected_size = expected_size
        self.directory = store.directory_of(expected_digest)
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.directory, DIR_MODE)
        self.tmp_path = self.directory / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # whatever the umask: the worker's uid reads the hard links
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._hash = hashlib.sha256()
        self.size = 0
        self.committed = False

    def reserve(self, size: int) -> None:
        """Account for ``size`` more bytes. Raises ``PayloadTooLarge`` past ``expected_size``."""
        if self.size + size > self.expected_size:
            raise PayloadTooLarge(f"body larger than the declared {self.expected_size} bytes")
        self.size += size

    def hash_part(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes to the digest (releases the GIL; may run beside :meth:`write_part`)."""
        self._hash.update(data)

    def write_part(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes to the temp file (releases the GIL)."""
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written or 0 :]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes: reserve, hash, write. Raises ``PayloadTooLarge`` past the size."""
        self.reserve(len(data))
        self.hash_part(data)
        self.write_part(data)

    def commit(self) -> Path:
        """Check size and digest, then fsync and publish the blob; returns its path.

        Raises ``InputError`` when the bytes are not exactly the expected ones (nothing is
        published then).
        """
        if self.size != self.expected_size:
            raise InputError(
                f"body has {self.size} bytes; the signed statement says {self.expected_size}"
            )
        if self._hash.hexdigest() != self.expected_digest:
            raise InputError("body digest differs from the signed statement's ciphertext_digest")
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.store.path_of(self.expected_digest)
        os.replace(self.tmp_path, final)
        _fsync_dir(self.directory)
        self.committed = True
        return final

    def abort(self) -> None:
        """Drop the temp file (idempotent)."""
        if not self._file.closed:
            self._file.close()
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                self.tmp_path.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.abort()


class BlobStore:
    """Blobs named by the hex SHA-256 of their bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.root, DIR_MODE)

    def directory_of(self, digest: str) -> Path:
        return self.root / check_digest(digest)[:2]

    def path_of(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it exists)."""
        return self.directory_of(digest) / digest

    def exists(self, digest: str) -> bool:
        """True when the complete blob is present."""
        return self.path_of(digest).is_file()

    def open(self, digest: str) -> Path:
        """The path of an existing blob. Raises ``NotFoundError``."""
        path = self.path_of(digest)
        if not path.is_file():
            raise NotFoundError("blob not found")
        return path

    def writer(self, digest: str, size: int) -> BlobWriter:
        """A writer for a blob of exactly ``size`` bytes hashing to ``digest``."""
        return BlobWriter(self, digest, size)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (idempotent); returns its digest."""
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest
        with self.writer(digest, len(data)) as writer:
            writer.write(data)
            writer.commit()
        return digest

    def clean_temp(self) -> int:
        """Remove temp files left by a crash; returns how many. Call before serving."""
        removed = 0
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for entry in sub.iterdir():
                if entry.name.startswith(TMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
                        removed += 1
        return removed

    def link_into(self, digest: str, target: Path) -> None:
        """Hard-link the blob to ``target`` (copy across file systems), readable by all."""
        source = self.open(digest)
        try:
            os.link(source, target)
        except OSError:
            import shutil

            shutil.copyfile(source, target)
            os.chmod(target, FILE_MODE)
