"""Decrypted inputs in memory-backed files (``memfd_create``): the plaintext exists once, in
memory, and the keyless runner reads it in place through an inherited descriptor.

A :class:`MemFile` is an anonymous file of a fixed size mapped into the supervisor. The worker
writes the plaintext into it chunk by chunk (:func:`sdk.protocol.sealing.open_to_buffer` with
``allocate=MemFile``), hands the runner the descriptor (opened read-only, through
``/proc/self/fd``), and the query engine reads the Parquet file with its own reader: no copy
through a pipe, no second buffer in the runner, no whole-table decoding. It never touches a
disk: the file lives in anonymous memory and disappears with its last descriptor.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

from sdk.errors import ResourceError


class MemFile:
    """An anonymous in-memory file of ``size`` bytes: written with ``pwrite`` (slice
    assignment), read through a read-only mapping made on the first :meth:`view`.

    Written through the file, not a mapping: the kernel allocates each page as the plaintext
    arrives, with no page table to fill in this process (on a VM, populating a writable
    mapping first cost as much again as the allocation: decryption at 10M rows 0.85 s, through
    the file 0.56 s). The mapping a view needs faults in only the pages read (a Parquet
    footer, for the checks; every page only for custom code, which is streamed)."""

    def __init__(self, size: int, name: str = "sealroom-input") -> None:
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        self._map: mmap.mmap | None = None
        try:
            os.ftruncate(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise

    def __setitem__(self, key: slice, value: Any) -> None:
        """Write ``value`` at ``key.start`` (``key.stop - key.start`` bytes). Raises
        ``ResourceError`` when memory runs out and ``ValueError`` outside the file."""
        start = key.start or 0
        data = memoryview(value).cast("B")
        if start < 0 or start + len(data) > self.size or (
                key.stop is not None and key.stop - start != len(data)):
            raise ValueError("a write outside the file")
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(self.fd, data[written:], start + written)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                raise ResourceError("the inputs do not fit in the worker's memory") from None
            raise

    def __len__(self) -> int:
        return self.size

    def view(self) -> memoryview:
        """A read-only view of the contents (empty for a 0-byte file)."""
        if not self.size:
            return memoryview(b"")
        if self._map is None:
            self._map = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED,
                                  prot=mmap.PROT_READ)
        return memoryview(self._map)

    def reader_fd(self) -> int:
        """A new read-only descriptor of the file, for a child to inherit (caller closes it)."""
        return os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        """Unmap and close; views must be released first."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


__all__ = ["MemFile"]
