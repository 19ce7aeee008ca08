"""Child process of the large-file sealing tests: seal a generated stream of N MiB into a pipe
while opening it from the other end, so nothing is ever held whole in memory or on disk.

    python -m tests.protocol._bigseal MIB

Prints one JSON line: sizes, whether the plaintext came back, and peak RSS before and after.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import zlib
from typing import Any

from nacl.public import PrivateKey

from sdk.protocol.sealing import DEFAULT_CHUNK_SIZE, SealResult, open_stream, seal_stream

BLOCK = 1 << 20


class Generated:
    """A read-only stream of ``size`` bytes made on the fly (a random block, each MiB stamped
    with its index so reordering would change the content)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = bytearray(os.urandom(BLOCK))
        self.index = 0
        self.offset = 0
        self.crc = 0

    def readinto(self, view: memoryview) -> int:
        n = 0
        while n < len(view) and self.left:
            if self.offset == 0:
                self.block[:8] = self.index.to_bytes(8, "big")
            take = min(len(view) - n, BLOCK - self.offset, self.left)
            view[n : n + take] = self.block[self.offset : self.offset + take]
            self.crc = zlib.crc32(view[n : n + take], self.crc)
            n += take
            self.left -= take
            self.offset += take
            if self.offset == BLOCK:
                self.offset = 0
                self.index += 1
        return n


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(size: int) -> dict[str, Any]:
    key = PrivateKey(bytes(range(32)))
    src = Generated(size)
    # warm up every code path once, so the baseline includes libraries and their buffers
    warm = Generated(3 * DEFAULT_CHUNK_SIZE)
    r0, w0 = os.pipe()
    with open(w0, "wb") as dst:
        t = threading.Thread(target=lambda: b"".join(open_stream(open(r0, "rb"), key)))
        t.start()
        seal_stream(warm, dst, bytes(key.public_key), {"warm": True})
    t.join()
    before = peak_rss_mib()

    r, w = os.pipe()
    result: list[SealResult] = []

    def sealer() -> None:
        with open(w, "wb") as dst:
            result.append(seal_stream(src, dst, bytes(key.public_key), {"big": size}))

    thread = threading.Thread(target=sealer)
    thread.start()
    crc = 0
    total = 0
    with open(r, "rb") as sealed:
        for chunk in open_stream(sealed, key, expected_binding={"big": size}):
            crc = zlib.crc32(chunk, crc)
            total += len(chunk)
    thread.join()
    return {
        "plaintext_size": result[0].plaintext_size,
        "ciphertext_size": result[0].ciphertext_size,
        "header_length": result[0].header.length,
        "opened": total,
        "same": crc == src.crc and total == size,
        "rss_before_mib": before,
        "rss_after_mib": peak_rss_mib(),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) * (1 << 20))))
