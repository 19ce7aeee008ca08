"""The room log's Merkle tree (RFC 6962/9162): roots, inclusion and consistency proofs for every
size 1..64 and every index, tampering, rollback and fork (T68–T70), and the transparency-dev
proof vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.errors import LogError
from sdk.protocol import merkle

VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "merkle-vectors"
# the eight leaves of the RFC 6962 / transparency-dev test trees
RFC6962_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
MAX_N = 64


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"entry %d" % i) for i in range(n)]


# -- an independent reference: the recursive definitions of RFC 6962 §2.1 -------------------


def ref_split(n: int) -> int:
    k = 1
    while 2 * k < n:
        k *= 2
    return k


def ref_mth(hashes: list[bytes]) -> bytes:
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = ref_split(len(hashes))
    return hashlib.sha256(b"\x01" + ref_mth(hashes[:k]) + ref_mth(hashes[k:])).digest()


def ref_path(m: int, hashes: list[bytes]) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_path(m, hashes[:k]), ref_mth(hashes[k:])]
    return [*ref_path(m - k, hashes[k:]), ref_mth(hashes[:k])]


def ref_subproof(m: int, hashes: list[bytes], b: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if b else [ref_mth(hashes)]
    k = ref_split(n)
    if m <= k:
        return [*ref_subproof(m, hashes[:k], b), ref_mth(hashes[k:])]
    return [*ref_subproof(m - k, hashes[k:], False), ref_mth(hashes[:k])]


ALL = leaves(MAX_N)
ROOTS = [ref_mth(ALL[:n]) for n in range(MAX_N + 1)]


# -- hashing and roots ------------------------------------------------------------------------


def test_hashing_is_rfc6962_domain_separated() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        merkle.node_hash(b"a" * 32, b"b" * 32)
        == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert merkle.root([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


def test_rfc6962_test_tree_roots() -> None:
    hashes = [merkle.leaf_hash(x) for x in RFC6962_LEAVES]
    known = {
        1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    }
    for n, root in known.items():
        assert merkle.root(hashes[:n]).hex() == root


def test_root_matches_the_recursive_definition_for_every_size() -> None:
    for n in range(MAX_N + 1):
        assert merkle.root(ALL[:n]) == ROOTS[n]


# -- inclusion ----------------------------------------------------------------------------------


def test_inclusion_every_size_and_index() -> None:
    for n in range(1, MAX_N + 1):
        for i in range(n):
            proof = merkle.inclusion_proof(ALL[:n], i)
            assert proof == ref_path(i, ALL[:n])
            merkle.verify_inclusion(ALL[i], i, n, proof, ROOTS[n])


def _rejects_inclusion(leaf: bytes, i: int, n: int, proof: list[bytes], root: bytes) -> None:
    with pytest.raises(LogError):
        merkle.verify_inclusion(leaf, i, n, proof, root)


def test_inclusion_tampering_every_size_and_index() -> None:
    other = merkle.leaf_hash(b"not in the tree")
    for n in range(1, MAX_N + 1):
        for i in range(n):
            proof = merkle.inclusion_proof(ALL[:n], i)
            _rejects_inclusion(other, i, n, proof, ROOTS[n])  # wrong leaf
            _rejects_inclusion(ALL[i], i, n, proof, ROOTS[n - 1])  # wrong root
            _rejects_inclusion(ALL[i], i, n, [*proof, ALL[0]], ROOTS[n])  # extended
            for j, element in enumerate(proof):
                flipped = bytes([element[0] ^ (1 << (j % 8))]) + element[1:]
                _rejects_inclusion(ALL[i], i, n, [*proof[:j], flipped, *proof[j + 1 :]], ROOTS[n])
            if proof:
                _rejects_inclusion(ALL[i], i, n, proof[:-1], ROOTS[n])  # truncated
                if n > 1:
                    _rejects_inclusion(ALL[i], (i + 1) % n, n, proof, ROOTS[n])  # wrong index
            for size in (n - 1, n + 1, 2 * n):
                # the proof of another size, against that size's real root (a proof does not
                # bind the size beyond its shape: the checkpoint signs size and root together)
                if i < size <= MAX_N and merkle.inclusion_proof(ALL[:size], i) != proof:
                    _rejects_inclusion(ALL[i], i, size, proof, ROOTS[size])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (-1, 5), (5, 5), (6, 5), (2**63, 2**63)])
def test_inclusion_index_outside_the_tree(index: int, size: int) -> None:
    _rejects_inclusion(ALL[0], index, size, [], ROOTS[1])


def test_inclusion_malformed_elements() -> None:
    proof = merkle.inclusion_proof(ALL[:8], 3)
    _rejects_inclusion(ALL[3], 3, 8, [*proof[:-1], proof[-1][:31]], ROOTS[8])
    _rejects_inclusion(ALL[3][:31], 3, 8, proof, ROOTS[8])
    _rejects_inclusion(ALL[3], 3, 8, [*proof, b""], ROOTS[8])


def test_inclusion_proof_generation_rejects_bad_index() -> None:
    for index in (-1, 8):
        with pytest.raises(LogError):
            merkle.inclusion_proof(ALL[:8], index)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_bit_flip_in_an_inclusion_proof_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, MAX_N))
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(ALL[:n], i)
    j = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    element = bytearray(proof[j])
    element[bit // 8] ^= 1 << (bit % 8)
    _rejects_inclusion(ALL[i], i, n, [*proof[:j], bytes(element), *proof[j + 1 :]], ROOTS[n])


# -- consistency --------------------------------------------------------------------------------


def test_consistency_every_pair_of_sizes() -> None:
    for n in range(1, MAX_N + 1):
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(ALL[:n], m)
            if 0 < m < n:
                assert proof == ref_subproof(m, ALL[:n], True)
            merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def _rejects_consistency(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> None:
    with pytest.raises(LogError):
        merkle.verify_consistency(m, n, r1, r2, proof)


def test_consistency_tampering_every_pair_of_sizes() -> None:
    forged = merkle.leaf_hash(b"forged")
    for n in range(2, MAX_N + 1):
        forked_new = ref_mth([*ALL[: n - 1], forged])
        for m in range(1, n):
            proof = merkle.consistency_proof(ALL[:n], m)
            _rejects_consistency(m, n, ROOTS[m], forked_new, proof)  # new tree rewrote history
            _rejects_consistency(m, n, forked_new, ROOTS[n], proof)  # wrong old root
            _rejects_consistency(n, m, ROOTS[n], ROOTS[m], proof)  # rollback
            _rejects_consistency(m, n, ROOTS[m], ROOTS[n], [*proof, forged])  # extended
            if proof:
                _rejects_consistency(m, n, ROOTS[m], ROOTS[n], proof[:-1])  # truncated
            for j, element in enumerate(proof):
                flipped = bytes([element[0] ^ 0x80]) + element[1:]
                _rejects_consistency(
                    m, n, ROOTS[m], ROOTS[n], [*proof[:j], flipped, *proof[j + 1 :]]
                )
            if m + 1 < n:
                _rejects_consistency(m + 1, n, ROOTS[m + 1], ROOTS[n], proof)  # wrong old size


def test_fork_same_size_different_root() -> None:
    for n in (1, 2, 7, 64):
        _rejects_consistency(n, n, ROOTS[n], merkle.leaf_hash(b"other"), [])
        merkle.verify_consistency(n, n, ROOTS[n], ROOTS[n], [])
        _rejects_consistency(n, n, ROOTS[n], ROOTS[n], [ROOTS[1]])  # same size needs no proof


def test_rollback_and_bad_sizes() -> None:
    _rejects_consistency(5, 4, ROOTS[5], ROOTS[4], [])
    _rejects_consistency(-1, 4, ROOTS[0], ROOTS[4], [])
    _rejects_consistency(0, 4, ROOTS[0], ROOTS[4], [ROOTS[1]])  # from empty: no proof allowed
    merkle.verify_consistency(0, 4, ROOTS[0], ROOTS[4], [])
    with pytest.raises(LogError):
        merkle.consistency_proof(ALL[:4], 5)
    with pytest.raises(LogError):
        merkle.consistency_proof(ALL[:4], -1)


def test_split_view_is_detected() -> None:  # T69
    """Party A saw size 90 of the honest log; the coordinator shows B a size-100 log that
    rewrote entry 50: no consistency proof from A's checkpoint to B's root verifies."""
    honest = leaves(100)
    forked = [*honest[:50], merkle.leaf_hash(b"rewritten"), *honest[51:]]
    a_root, b_root = merkle.root(honest[:90]), merkle.root(forked)
    for proof in (
        merkle.consistency_proof(honest, 90),
        merkle.consistency_proof(forked, 90),
    ):
        _rejects_consistency(90, 100, a_root, b_root, proof)
    _rejects_consistency(100, 100, merkle.root(honest), b_root, [])


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_bit_flip_in_a_consistency_proof_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, MAX_N))
    m = data.draw(st.integers(1, n - 1))
    proof = merkle.consistency_proof(ALL[:n], m)
    j = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    element = bytearray(proof[j])
    element[bit // 8] ^= 1 << (bit % 8)
    _rejects_consistency(m, n, ROOTS[m], ROOTS[n], [*proof[:j], bytes(element), *proof[j + 1 :]])


# -- transparency-dev/merkle vectors (T70) ------------------------------------------------------


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _vector_files(kind: str) -> list[Path]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert files, f"no {kind} vectors committed"
    return files


def test_vectors_use_the_rfc6962_test_leaves() -> None:
    hashes = [merkle.leaf_hash(x) for x in RFC6962_LEAVES]
    doc = json.loads((VECTORS / "inclusion" / "1" / "happy-path.json").read_text())
    assert _b64(doc["root"]) == merkle.root(hashes)
    assert _b64(doc["leafHash"]) == hashes[0]


@pytest.mark.parametrize(
    "path", _vector_files("inclusion"), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_transparency_dev_inclusion_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (
        _b64(v["leafHash"]),
        v["leafIdx"],
        v["treeSize"],
        [_b64(p) for p in v["proof"] or []],
        _b64(v["root"]),
    )
    if v["wantErr"]:
        with pytest.raises(LogError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize(
    "path", _vector_files("consistency"), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_transparency_dev_consistency_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (
        v["size1"],
        v["size2"],
        _b64(v["root1"]),
        _b64(v["root2"]),
        [_b64(p) for p in v["proof"] or []],
    )
    if v["wantErr"]:
        with pytest.raises(LogError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)
