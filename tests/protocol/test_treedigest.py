"""The tree digest (sdk.protocol.treedigest) over synthetic tar streams: what changes it, what
does not, the engine's entries left out, the caps, and one literal vector of the format."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from sdk.errors import InputError
from sdk.protocol.treedigest import (
    CONFIG_FIELDS,
    ENGINE_ENTRIES,
    FORMAT,
    TreeLimits,
    canonical_config,
    listing_digest,
    tree_digest,
    tree_listing,
)

CONFIG: dict[str, Any] = {
    "Entrypoint": ["/opt/venv/bin/python", "-I", "-m", "enclave"],
    "Cmd": None,
    "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
    "User": "65534:65534",
    "WorkingDir": "/",
    "Labels": {"ignored": "yes"},
}


@dataclass(frozen=True)
class Entry:
    """One synthetic tar member."""

    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    link: str = ""
    dev: tuple[int, int] = (0, 0)
    pax: dict[str, str] = field(default_factory=dict)


def tar_bytes(entries: list[Entry], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.kind
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, e.mtime
            info.linkname = e.link
            info.devmajor, info.devminor = e.dev
            info.pax_headers = dict(e.pax)
            if e.kind == tarfile.REGTYPE:
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
            else:
                tf.addfile(info)
    return buf.getvalue()


class Pipe(io.RawIOBase):
    """A read-once, unseekable stream handing out at most 1000 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), len(self._data), 1000)
        b[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def digest(entries: list[Entry], config: dict[str, Any] | None = None, **limits: int) -> str:
    return tree_digest(Pipe(tar_bytes(entries)), config=CONFIG if config is None else config,
                       limits=TreeLimits(**limits))


TREE = [
    Entry("etc", tarfile.DIRTYPE, mode=0o755),
    Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
    Entry("usr", tarfile.DIRTYPE, mode=0o755),
    Entry("usr/bin", tarfile.DIRTYPE, mode=0o755),
    Entry("usr/bin/python3", data=b"\x7fELF python", mode=0o755),
    Entry("usr/bin/python", tarfile.SYMTYPE, mode=0o777, link="python3"),
    Entry("usr/bin/py", tarfile.LNKTYPE, mode=0o755, link="usr/bin/python3"),
    Entry("usr/bin/su", data=b"su", mode=0o4755),
    Entry("tmp", tarfile.DIRTYPE, mode=0o1777),
    Entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
    Entry("opt/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
]


def test_known_vector() -> None:
    """A fixed small tree gives this exact listing and digest: the format is protocol."""
    listing = tree_listing(io.BytesIO(tar_bytes(TREE)), config=CONFIG)
    assert listing.decode("ascii") == (
        "sealroom-tree/1\n"
        'config {"Cmd":[],"Entrypoint":["/opt/venv/bin/python","-I","-m","enclave"],'
        '"Env":["LANG=C.UTF-8","PATH=/usr/bin:/bin"],"ExposedPorts":[],"Healthcheck":null,'
        '"User":"65534:65534","Volumes":[],"WorkingDir":"/"}\n'
        "etc dir 0755 0:0\n"
        "etc/passwd file 0644 0:0 30 "
        "sha256:" + hashlib.sha256(b"root:x:0:0:root:/root:/bin/sh\n").hexdigest() + "\n"
        "opt/null char 0666 0:0 1,3\n"
        "run/fifo fifo 0600 0:0\n"
        "tmp dir 1777 0:0\n"
        "usr dir 0755 0:0\n"
        "usr/bin dir 0755 0:0\n"
        "usr/bin/py hardlink 0755 0:0 -> usr/bin/python3\n"
        "usr/bin/python symlink 0777 0:0 -> python3\n"
        "usr/bin/python3 file 0755 0:0 11 "
        "sha256:" + hashlib.sha256(b"\x7fELF python").hexdigest() + "\n"
        "usr/bin/su file 4755 0:0 2 sha256:" + hashlib.sha256(b"su").hexdigest() + "\n"
    )
    assert listing_digest(listing) == digest(TREE)
    assert digest(TREE) == \
        "sha256:49dbbc7a0ea532b351d57c8cc92a5535ccf5662c3da0e1b283d2f0e68780e26b"


def test_order_of_the_tar_does_not_matter() -> None:
    shuffled = list(TREE)
    random.Random(7).shuffle(shuffled)
    assert digest(shuffled) == digest(TREE)
    assert digest(list(reversed(TREE))) == digest(TREE)


def test_times_names_and_tar_format_do_not_matter() -> None:
    later = [replace(e, mtime=e.mtime + 86_400 * 365) for e in TREE]
    assert digest(later) == digest(TREE)
    gnu = tar_bytes(TREE, fmt=tarfile.GNU_FORMAT)
    assert tree_digest(io.BytesIO(gnu), config=CONFIG) == digest(TREE)
    spelled = [replace(e, name=("./" if i % 2 else "/") + e.name) for i, e in enumerate(TREE)]
    assert digest(spelled) == digest(TREE)


@pytest.mark.parametrize("change", [
    lambda e: replace(e, mode=0o600) if e.name == "etc/passwd" else e,
    lambda e: replace(e, mode=0o755) if e.name == "usr/bin/su" else e,  # setuid bit dropped
    lambda e: replace(e, mode=0o777) if e.name == "tmp" else e,  # sticky bit dropped
    lambda e: replace(e, uid=1000) if e.name == "etc/passwd" else e,
    lambda e: replace(e, gid=1000) if e.name == "usr/bin" else e,
    lambda e: replace(e, data=b"root:x:0:0:root:/root:/bin/bash\n")
    if e.name == "etc/passwd" else e,
    lambda e: replace(e, link="/usr/bin/evil") if e.name == "usr/bin/python" else e,
    lambda e: replace(e, link="etc/passwd") if e.name == "usr/bin/py" else e,
    lambda e: replace(e, dev=(1, 5)) if e.name == "opt/null" else e,
    lambda e: replace(e, kind=tarfile.BLKTYPE) if e.name == "opt/null" else e,
    lambda e: replace(e, name="usr/bin/python3.11") if e.name == "usr/bin/python3" else e,
    lambda e: replace(e, pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"})
    if e.name == "usr/bin/python3" else e,
], ids=["mode", "setuid", "sticky", "uid", "gid", "content", "symlink", "hardlink", "device",
        "type", "path", "xattr"])
def test_what_runs_changes_the_digest(change: Any) -> None:
    assert digest([change(e) for e in TREE]) != digest(TREE)


def test_an_added_or_removed_entry_changes_the_digest() -> None:
    assert digest([*TREE, Entry("etc/ld.so.preload", data=b"/tmp/x.so")]) != digest(TREE)
    assert digest(TREE[:-1]) != digest(TREE)


@pytest.mark.parametrize("update", [
    {"Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LD_PRELOAD=/tmp/x.so"]},
    {"User": "0:0"},
    {"User": None},
    {"Entrypoint": ["/bin/sh"]},
    {"Entrypoint": ["/opt/venv/bin/python", "-m", "enclave", "-I"]},  # order matters
    {"Cmd": ["--debug"]},
    {"WorkingDir": "/tmp"},
    {"ExposedPorts": {"22/tcp": {}}},
    {"Volumes": {"/data": {}}},
    {"Healthcheck": {"Test": ["CMD", "/bin/sh", "-c", "cat /job/secrets/*"]}},
])
def test_the_config_that_decides_what_runs_changes_the_digest(update: dict[str, Any]) -> None:
    assert digest(TREE, {**CONFIG, **update}) != digest(TREE)


def test_equivalent_configs_give_the_same_digest() -> None:
    base = digest(TREE)
    assert digest(TREE, {**CONFIG, "Env": list(reversed(CONFIG["Env"]))}) == base
    assert digest(TREE, {**CONFIG, "Cmd": []}) == base
    assert digest(TREE, {k: v for k, v in CONFIG.items() if k != "Cmd"}) == base
    assert digest(TREE, {**CONFIG, "Labels": {"other": "label"}, "StopSignal": "SIGKILL",
                         "Hostname": "x", "Image": "sha256:" + "0" * 64}) == base
    assert digest(TREE, {**CONFIG, "Volumes": {}, "ExposedPorts": None}) == base
    assert set(canonical_config({})) == set(CONFIG_FIELDS)


@pytest.mark.parametrize("bad", [
    {"Env": ["A=1", "A=2"]},
    {"Env": "A=1"},
    {"Entrypoint": "python -m enclave"},
    {"Cmd": [1, 2]},
    {"User": 65534},
    {"Volumes": ["/data"]},
    {"Healthcheck": ["CMD", "true"]},
])
def test_malformed_configs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="image config"):
        digest(TREE, {**CONFIG, **bad})


def test_the_engines_entries_are_left_out() -> None:
    engine = [
        Entry(".dockerenv", mode=0o755),
        Entry("dev", tarfile.DIRTYPE, mode=0o755),
        Entry("dev/console", mode=0o755),
        Entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        Entry("dev/pts", tarfile.DIRTYPE, mode=0o755),
        Entry("dev/shm", tarfile.DIRTYPE, mode=0o755),
        Entry("etc/hostname", data=b"c0ffee\n", mode=0o755),
        Entry("etc/hosts", data=b"127.0.0.1 localhost\n", mode=0o755),
        Entry("etc/resolv.conf", data=b"nameserver 10.0.0.1\n", mode=0o755),
        Entry("etc/mtab", tarfile.SYMTYPE, mode=0o777, link="/proc/mounts"),
        Entry("proc", tarfile.DIRTYPE, mode=0o755),
        Entry("sys", tarfile.DIRTYPE, mode=0o755),
        Entry("sys/kernel", tarfile.DIRTYPE, mode=0o755),
    ]
    assert {e.name.split("/")[0] if e.name.startswith(("dev", "proc", "sys")) else e.name
            for e in engine} == set(ENGINE_ENTRIES)
    assert digest([*engine, *TREE]) == digest(TREE)
    assert digest([replace(e, data=b"other") if e.data else e for e in engine] + TREE) \
        == digest(TREE)
    # only those paths: look-alikes are the image's own
    for name in ("devices", "etc/hosts.allow", "etc/hostname.d", "system", "process",
                 "opt/dev/null", "usr/.dockerenv"):
        assert digest([*TREE, Entry(name, data=b"x")]) != digest(TREE), name


def test_the_root_entry_is_not_listed() -> None:
    assert digest([Entry(".", tarfile.DIRTYPE, mode=0o700), *TREE]) == digest(TREE)
    assert digest([Entry("./", tarfile.DIRTYPE, mode=0o755), *TREE]) == digest(TREE)


def test_awkward_names_are_percent_encoded() -> None:
    tree = [Entry("opt/a b%c\u00e9", data=b"x"), Entry("opt/l", tarfile.SYMTYPE, link="x\ny")]
    listing = tree_listing(io.BytesIO(tar_bytes(tree)), config={}).decode("ascii")
    assert "opt/a%20b%25c%C3%A9 file 0644 0:0 1 sha256:" in listing
    assert "opt/l symlink 0644 0:0 -> x%0Ay\n" in listing
    assert listing.startswith(FORMAT + "\n")
    assert all(line.count(" ") >= 3 for line in listing.splitlines()[2:])


def test_xattrs_are_listed_in_hex() -> None:
    tree = [Entry("bin/ping", data=b"p", mode=0o755,
                  pax={"SCHILY.xattr.security.capability": "\x01\x02",
                       "SCHILY.xattr.user.a": "z"})]
    listing = tree_listing(io.BytesIO(tar_bytes(tree)), config={}).decode("ascii")
    assert listing.splitlines()[-1].endswith(
        " xattr:security.capability=0102 xattr:user.a=7a")


def test_content_is_streamed_across_blocks() -> None:
    big = bytes(range(256)) * (3 * 4096 + 17)  # a little over 3 MiB
    tree = [Entry("opt/big", data=big)]
    listing = tree_listing(Pipe(tar_bytes(tree)), config={}).decode("ascii")
    assert f"opt/big file 0644 0:0 {len(big)} sha256:{hashlib.sha256(big).hexdigest()}" \
        in listing


@pytest.mark.parametrize(("limits", "message"), [
    ({"max_entries": len(TREE) - 1}, "entries"),
    ({"max_file_bytes": 20}, "larger than"),
    ({"max_total_bytes": 40}, "bytes of content"),
    ({"max_path_bytes": 10}, "longer than"),
    ({"max_link_bytes": 5}, "link target"),
    ({"max_listing_bytes": 600}, "listing exceeds"),
])
def test_caps_are_enforced(limits: dict[str, int], message: str) -> None:
    assert digest(TREE)  # within the default caps
    with pytest.raises(InputError, match=message):
        digest(TREE, **limits)


def test_the_engines_entries_count_against_the_entry_cap() -> None:
    flood = [Entry(f"proc/{i}") for i in range(50)]
    with pytest.raises(InputError, match="entries"):
        digest([*flood, *TREE], max_entries=40)


def test_xattr_caps_are_enforced() -> None:
    many = {f"SCHILY.xattr.user.{i}": "v" for i in range(5)}
    with pytest.raises(InputError, match="xattrs"):
        digest([Entry("a", data=b"x", pax=many)], max_xattrs=4)
    with pytest.raises(InputError, match="oversized xattr"):
        digest([Entry("a", data=b"x", pax={"SCHILY.xattr.user.a": "v" * 100})],
               max_xattr_bytes=99)


@pytest.mark.parametrize(("tree", "message"), [
    ([Entry("etc/passwd"), Entry("./etc/passwd")], "listed twice"),
    ([Entry("etc/../../x")], "'..'"),
    ([Entry("usr/bin/py", tarfile.LNKTYPE, link="")], "link target"),
])
def test_ambiguous_trees_are_refused(tree: list[Entry], message: str) -> None:
    with pytest.raises(InputError, match=message):
        digest(tree)


@pytest.mark.parametrize("data", [b"", b"not a tar at all" * 64, tar_bytes(TREE)[:700]])
def test_what_is_not_a_tar_is_refused(data: bytes) -> None:
    with pytest.raises(InputError, match="image tree"):
        tree_digest(io.BytesIO(data), config=CONFIG)


def test_an_unsupported_member_type_is_refused() -> None:
    with pytest.raises(InputError, match="unsupported entry type"):
        digest([Entry("x", kind=b"V")])  # a GNU volume header


def end_of_members(data: bytes) -> int:
    """Where the end-of-archive marker of a tar starts."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        last = tf.getmembers()[-1]
    return last.offset_data + -(-last.size // 512) * 512


def test_a_stream_cut_short_is_refused_not_listed_in_part() -> None:
    whole = tar_bytes(TREE)
    end = end_of_members(whole)
    assert whole[end:] == bytes(len(whole) - end) and len(whole) - end >= 1024
    for cut in (end, end + 512, len(whole) // 2, 1024, end - 100):
        with pytest.raises(InputError, match="image tree"):
            tree_digest(io.BytesIO(whole[:cut]), config=CONFIG)
    assert tree_digest(io.BytesIO(whole[:end + 1024]), config=CONFIG) == digest(TREE)


def test_data_after_the_end_marker_is_refused() -> None:
    whole = tar_bytes(TREE)
    assert tree_digest(io.BytesIO(whole + bytes(4096)), config=CONFIG) == digest(TREE)
    with pytest.raises(InputError, match="end-of-archive"):
        tree_digest(io.BytesIO(whole + tar_bytes([Entry("hidden", data=b"x")])), config=CONFIG)
    head = tar_bytes(TREE[:2])
    one_zero_block = head[:end_of_members(head) + 512]  # tarfile stops at a single one
    with pytest.raises(InputError, match="end-of-archive"):
        tree_digest(io.BytesIO(one_zero_block + tar_bytes(TREE[2:])), config=CONFIG)
