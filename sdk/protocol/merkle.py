"""The room log's Merkle tree, with RFC 6962 / RFC 9162 hashing and proofs.

``leaf = SHA-256(0x00 || entry)`` and ``node = SHA-256(0x01 || left || right)``. Trees are
given as lists of leaf hashes. The verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 and raise
``LogError`` on any failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sdk.errors import LogError

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of the leaves (SHA-256 of nothing for an empty tree)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    # iterative, equivalent to the RFC's recursive definition: pair from the left and carry
    # an odd node up unchanged
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 9162 §2.1.3.1)."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise LogError("inclusion proof: index outside the tree")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(leaf_hashes[:k], index), root(leaf_hashes[k:])]
    return [*inclusion_proof(leaf_hashes[k:], index - k), root(leaf_hashes[:k])]


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """The consistency proof from the tree's first ``old_size`` leaves to all of them."""
    if not 0 <= old_size <= len(leaf_hashes):
        raise LogError("consistency proof: old size outside the tree")
    if old_size in (0, len(leaf_hashes)):
        return []
    return _subproof(old_size, leaf_hashes, True)


def _shift_to_right_edge(fn: int, sn: int) -> tuple[int, int]:
    """RFC 9162: shift ``fn`` and ``sn`` right until the low bit of ``fn`` is set or it is 0."""
    while True:
        fn >>= 1
        sn >>= 1
        if fn & 1 or fn == 0:
            return fn, sn


def verify_inclusion(
    leaf_hash_: bytes, index: int, tree_size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Verify an inclusion proof (RFC 9162 §2.1.3.2). Raises ``LogError`` when it fails."""
    if not 0 <= index < tree_size:
        raise LogError("inclusion: index outside the tree")
    if any(len(p) != 32 for p in proof) or len(leaf_hash_) != 32:
        raise LogError("inclusion: malformed proof")
    fn, sn = index, tree_size - 1
    r = leaf_hash_
    for p in proof:
        if sn == 0:
            raise LogError("inclusion: proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                fn, sn = _shift_to_right_edge(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root_hash:
        raise LogError("inclusion: proof does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify a consistency proof (RFC 9162 §2.1.4.2). Raises ``LogError`` when it fails."""
    if not 0 <= old_size <= new_size:
        raise LogError("consistency: old size beyond new size (rollback)")
    if any(len(p) != 32 for p in proof):
        raise LogError("consistency: malformed proof")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise LogError("consistency: same size but different roots (fork)")
        return
    if old_size == 0:
        if proof:
            raise LogError("consistency: proof must be empty from an empty tree")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        path.insert(0, old_root)
    if not path:
        raise LogError("consistency: empty proof")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise LogError("consistency: proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                fn, sn = _shift_to_right_edge(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise LogError("consistency: proof does not match the roots (fork or rollback)")
