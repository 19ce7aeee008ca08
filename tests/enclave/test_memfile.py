"""In-memory input files (enclave/memfile.py): written through the file, read through a
read-only mapping or an inherited descriptor, closed with nothing left."""

from __future__ import annotations

import os

import pytest

from enclave.memfile import MemFile


def test_writes_land_where_asked_and_views_are_read_only() -> None:
    f = MemFile(10)
    f[5:10] = b"world"
    f[0:5] = bytearray(b"hello")
    view = f.view()
    assert bytes(view) == b"helloworld"
    assert view.readonly
    fd = f.reader_fd()
    try:
        assert os.pread(fd, 10, 0) == b"helloworld"
    finally:
        os.close(fd)
    view.release()
    f.close()
    assert f.fd == -1


@pytest.mark.parametrize("key", [slice(8, 12), slice(-1, 2), slice(0, 3)])
def test_a_write_outside_the_file_or_of_another_length_is_refused(key: slice) -> None:
    f = MemFile(10)
    with pytest.raises(ValueError):
        f[key] = b"abcd"
    f.close()


def test_an_empty_file_has_an_empty_view() -> None:
    f = MemFile(0)
    assert bytes(f.view()) == b""
    f.close()
