"""Decrypted inputs in memory-backed files (``memfd_create``): the plaintext exists once, in
memory, and the keyless runner reads it in place through an inherited descriptor.

A :class:`MemFile` is an anonymous file of a fixed size mapped into the supervisor. The worker
decrypts straight into the mapping (:func:`sdk.protocol.sealing.open_to_buffer` with
``allocate=MemFile``), hands the runner the descriptor (opened read-only, through
``/proc/self/fd``), and the query engine reads the Parquet file with its own reader: no copy
through a pipe, no second buffer in the runner, no whole-table decoding. It never touches a
disk: the file lives in anonymous memory and disappears with its last descriptor.
"""

from __future__ import annotations

import mmap
import os
from typing import Any


class MemFile:
    """An anonymous in-memory file of ``size`` bytes, mapped read-write until :meth:`seal`."""

    def __init__(self, size: int, name: str = "sealroom-input") -> None:
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            # populated: the pages are allocated at once, not faulted in one by one while
            # the plaintext is written (the whole file is written anyway)
            self._map = mmap.mmap(self.fd, max(size, 1),
                                  flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)) \
                if size else None
        except BaseException:
            os.close(self.fd)
            raise

    def __setitem__(self, key: slice, value: Any) -> None:
        assert self._map is not None
        self._map[key] = value

    def __len__(self) -> int:
        return self.size

    def writable(self, start: int, stop: int) -> memoryview:
        """A writable view of bytes ``start:stop`` (for decrypting straight into the file)."""
        assert self._map is not None
        return memoryview(self._map)[start:stop]

    def view(self) -> memoryview:
        """A read-only view of the contents (empty for a 0-byte file)."""
        if self._map is None:
            return memoryview(b"")
        return memoryview(self._map).toreadonly()

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
