"""The tree digest: a worker image's measurement that anyone can recompute from a rebuild.

A Docker image id hashes build metadata (creation times, history, builder), so two builds of
the same commit never share one. The tree digest hashes only what a container of the image
runs: its flattened filesystem, as ``docker export`` of a created (never started) container
streams it, and the part of its config that decides what runs. Standard library only (plus
the protocol's canonical JSON): auditors recompute it with the base install, no Docker SDK.

The listing (this format is part of the protocol; ``FORMAT`` names its version)
-------------------------------------------------------------------------------

The digest is ``"sha256:" + hex(SHA-256(listing))`` (64 lower-case hex digits). The listing is
UTF-8 text (ASCII but for the config JSON, which RFC 8785 leaves unescaped), every line ended
by one ``\\n`` (LF), in this order:

1. the format line ``sealroom-tree/1``;
2. the config line ``config <JSON>``: the RFC 8785 (JCS) canonical JSON of an object with
   exactly the keys of ``CONFIG_FIELDS``, taken from the image config (``Config`` of
   ``docker image inspect``), normalised so that equivalent configs give the same line:

   * ``Entrypoint``, ``Cmd``: the list of strings as given (order matters); absent or null
     is ``[]``;
   * ``Env``: the ``NAME=value`` strings sorted by code point; absent or null is ``[]``; a
     name given twice is refused (its value would depend on the reader);
   * ``User``, ``WorkingDir``: the string; absent or null is ``""``;
   * ``ExposedPorts``, ``Volumes``: the sorted list of their keys (Docker's values are
     always ``{}``); absent or null is ``[]``;
   * ``Healthcheck``: the object as given (the engine runs its command inside the
     container); absent is ``null``;

3. one line per tar entry that is not excluded (see below), sorted by the raw bytes of its
   normalised path (before percent-encoding), each of the form ``<path> <type> <mode> <uid>:<gid>[ <detail>][ <xattr>...]``:

   * ``path``: the entry's name normalised: leading ``/`` and ``./`` removed, empty and
     ``.`` segments removed, no trailing ``/``; a ``..`` segment is refused; the root
     directory itself (an empty path) is not listed;
   * ``type``: ``file`` (regular or contiguous file), ``dir``, ``symlink``, ``hardlink``,
     ``char``, ``block`` or ``fifo``; any other entry type is refused;
   * ``mode``: the permission bits with setuid, setgid and sticky (``mode & 0o7777``) as four
     octal digits, e.g. ``0755``, ``4755``;
   * ``uid:gid``: the numeric owner, in decimal (user and group names are not listed);
   * ``detail``, by type: ``file``: ``<size> sha256:<hex>``, the size in bytes (decimal) and
     the SHA-256 of the content; ``symlink``: ``-> <target>``, the link text exactly as
     stored; ``hardlink``: ``-> <target>``, the target's path normalised like ``path``;
     ``char`` and ``block``: ``<major>,<minor>`` in decimal; ``dir`` and ``fifo``: none;
   * ``xattr``: one field ``xattr:<name>=<hex value>`` per extended attribute the entry
     carries (PAX records ``SCHILY.xattr.<name>``, e.g. ``security.capability``: file
     capabilities), sorted by name bytes;
   * ``path``, ``target`` and xattr names are written percent-encoded: each byte outside
     ``0x21``-``0x7E``, and ``%`` itself, is written ``%XX`` (two upper-case hex digits),
     so a line never holds a space, a newline or a non-ASCII byte inside a field.

Timestamps (mtime, atime, ctime), user and group names and the order of the tar are not
listed. A path given twice is refused. Hard-link entries name the path that ``docker export``
wrote first (it walks the tree in lexical order, so a rebuild names the same one).

Excluded entries: every entry whose path is, or lies below, a key of ``ENGINE_ENTRIES``: the
engine creates them in every container (its init layer) or mounts over them when the
container starts, so they say nothing about the image and would tie the digest to one engine.

The stream must end with the tar end-of-archive marker (two zero blocks), followed by zero
padding only: a truncated or garbled stream is refused, never listed in part.

Limits: ``TreeLimits`` caps the entries read, path and link lengths, extended attributes,
each file's size, the total content and the listing's size; a stream over a cap is refused
with ``InputError``. Content is hashed in 1 MiB blocks as it streams; only the listing lines
are held in memory.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final, cast

from sdk.errors import InputError
from sdk.protocol.canonical import canonical_json

FORMAT: Final = "sealroom-tree/1"

# Image config fields that change what a container of the image runs (see the module doc).
CONFIG_FIELDS: Final = ("Cmd", "Entrypoint", "Env", "ExposedPorts", "Healthcheck", "User",
                        "Volumes", "WorkingDir")

# Entries the engine itself makes in every container, never the image's: the entry and
# everything below it are left out of the listing.
ENGINE_ENTRIES: Final[Mapping[str, str]] = {
    ".dockerenv": "marker file the engine's init layer creates in every container",
    "dev": "a fresh tmpfs with the engine's device nodes is mounted here at start; the init "
           "layer adds dev/console, dev/pts, dev/shm; nothing the image ships below it is seen",
    "etc/hostname": "created empty by the init layer, bind-mounted per container at start",
    "etc/hosts": "created empty by the init layer, bind-mounted per container at start",
    "etc/mtab": "replaced by the init layer with a symlink to /proc/mounts",
    "etc/resolv.conf": "created empty by the init layer, bind-mounted per container at start",
    "proc": "mount point of the kernel's procfs, created by the init layer",
    "sys": "mount point of the kernel's sysfs, created by the init layer",
}

_TYPES: Final[Mapping[bytes, str]] = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
_XATTR_PREFIX: Final = "SCHILY.xattr."
_BLOCK: Final = 1 << 20
_MAX_TRAILER: Final = 1 << 20  # zero padding after the end-of-archive marker
_UNSAFE: Final = re.compile(rb"[^\x21-\x24\x26-\x7e]")  # outside 0x21-0x7E, or "%"
_EXCLUDED: Final = tuple(name.encode() for name in ENGINE_ENTRIES)


@dataclass(frozen=True)
class TreeLimits:
    """Caps on what one image stream may hold (the defaults fit any reasonable image)."""

    max_entries: int = 1_000_000
    max_path_bytes: int = 4096
    max_link_bytes: int = 4096
    max_xattrs: int = 64
    max_xattr_bytes: int = 64 * 1024
    max_file_bytes: int = 8 << 30
    max_total_bytes: int = 64 << 30
    max_listing_bytes: int = 256 << 20


DEFAULT_LIMITS: Final = TreeLimits()


def tree_digest(tar_stream: IO[bytes], *, config: Mapping[str, Any],
                limits: TreeLimits = DEFAULT_LIMITS) -> str:
    """``sha256:<hex>`` of the listing of ``tar_stream`` and ``config`` (see the module doc).

    ``tar_stream`` is an uncompressed tar read once, front to back (a pipe is fine);
    ``config`` the image config (``Config`` of ``docker image inspect``). Raises
    ``InputError`` for a stream that is not such a tar, breaks a rule or exceeds ``limits``.
    """
    return listing_digest(tree_listing(tar_stream, config=config, limits=limits))


def listing_digest(listing: bytes) -> str:
    """The digest of a listing made by :func:`tree_listing`."""
    return "sha256:" + hashlib.sha256(listing).hexdigest()


def tree_listing(tar_stream: IO[bytes], *, config: Mapping[str, Any],
                 limits: TreeLimits = DEFAULT_LIMITS) -> bytes:
    """The canonical listing itself (what :func:`tree_digest` hashes), e.g. to diff two builds.

    Raises ``InputError`` like :func:`tree_digest`.
    """
    header = f"{FORMAT}\nconfig ".encode() + canonical_json(canonical_config(config)) + b"\n"
    entries: dict[bytes, bytes] = {}
    budget = _Budget(limits, len(header))
    stream = _Recording(tar_stream)
    try:
        with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", encoding="utf-8",
                          errors="surrogateescape") as archive:
            for member in archive:
                budget.entry()
                path = _normalise(_raw(member.name), limits.max_path_bytes)
                if not path or _excluded(path):
                    continue
                if path in entries:
                    raise InputError(f"image tree: {_show(path)} is listed twice")
                line = _line(archive, member, path, limits, budget)
                budget.line(len(line))
                entries[path] = line
            stream.check_end(archive.offset)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"image tree: not a readable tar stream ({type(exc).__name__})") \
            from None
    return header + b"".join(entries[p] for p in sorted(entries))


def canonical_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config object of the listing's ``config`` line (see the module doc).

    Raises ``InputError`` for a field of the wrong shape or an environment name given twice.
    """
    if not isinstance(config, Mapping):
        raise InputError("image config: not an object")
    env = _strings(config, "Env")
    names = [item.split("=", 1)[0] for item in env]
    if len(set(names)) != len(names):
        raise InputError("image config: an Env name is given twice")
    health = config.get("Healthcheck")
    if health is not None and not isinstance(health, Mapping):
        raise InputError("image config: Healthcheck is not an object")
    return {
        "Cmd": _strings(config, "Cmd"),
        "Entrypoint": _strings(config, "Entrypoint"),
        "Env": sorted(env),
        "ExposedPorts": _keys(config, "ExposedPorts"),
        "Healthcheck": dict(health) if health is not None else None,
        "User": _string(config, "User"),
        "Volumes": _keys(config, "Volumes"),
        "WorkingDir": _string(config, "WorkingDir"),
    }


class _Recording:
    """The tar stream, remembering its last chunks: tarfile stops quietly at a truncated or
    garbled header, so the end is checked here (:meth:`check_end`)."""

    _KEEP = 16  # chunks; tarfile reads at most its record size (10 KiB) past its offset

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._recent: deque[bytes] = deque(maxlen=self._KEEP)
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self.total += len(data)
            self._recent.append(data)
        return data

    def check_end(self, offset: int) -> None:
        """Refuse a stream that does not end, at ``offset`` (where tarfile stopped), with the
        end-of-archive marker (at least two zero blocks) and nothing but zero padding after."""
        seen = b"".join(self._recent)
        start = self.total - len(seen)
        if offset < start:  # pragma: no cover - tarfile never reads that far ahead
            raise InputError("image tree: cannot check the end of the tar stream")
        rest = bytearray(seen[offset - start:])
        while len(rest) <= _MAX_TRAILER and (more := self._raw.read(_BLOCK)):
            rest += more
        if len(rest) < 2 * tarfile.BLOCKSIZE or len(rest) > _MAX_TRAILER or any(rest):
            raise InputError("image tree: the tar stream does not end with its end-of-archive "
                             "marker (truncated or corrupt)")


class _Budget:
    """Counts what the stream used against the limits."""

    def __init__(self, limits: TreeLimits, listing: int) -> None:
        self.limits = limits
        self.entries = 0
        self.content = 0
        self.listing = listing

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise InputError(f"image tree: more than {self.limits.max_entries} entries")

    def file(self, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise InputError(f"image tree: a file is larger than {self.limits.max_file_bytes} "
                             "bytes")
        self.content += size
        if self.content > self.limits.max_total_bytes:
            raise InputError(f"image tree: more than {self.limits.max_total_bytes} bytes of "
                             "content")

    def line(self, size: int) -> None:
        self.listing += size
        if self.listing > self.limits.max_listing_bytes:
            raise InputError(f"image tree: the listing exceeds {self.limits.max_listing_bytes} "
                             "bytes")


def _line(archive: tarfile.TarFile, member: tarfile.TarInfo, path: bytes, limits: TreeLimits,
          budget: _Budget) -> bytes:
    kind = _TYPES.get(member.type)
    if kind is None:
        raise InputError(f"image tree: {_show(path)} has an unsupported entry type "
                         f"{member.type!r}")
    fields = [_pct(path), kind.encode(), b"%04o" % (member.mode & 0o7777),
              b"%d:%d" % (member.uid, member.gid)]
    if kind == "file":
        budget.file(member.size)
        fields += [b"%d" % member.size, b"sha256:" + _content_digest(archive, member, path)]
    elif kind in ("symlink", "hardlink"):
        target = _raw(member.linkname)
        if not target or len(target) > limits.max_link_bytes:
            raise InputError(f"image tree: {_show(path)} has an empty or overlong link target")
        if kind == "hardlink":
            target = _normalise(target, limits.max_link_bytes)
        fields += [b"->", _pct(target)]
    elif kind in ("char", "block"):
        fields.append(b"%d,%d" % (member.devmajor, member.devminor))
    fields += _xattrs(member, path, limits)
    return b" ".join(fields) + b"\n"


def _content_digest(archive: tarfile.TarFile, member: tarfile.TarInfo, path: bytes) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:  # pragma: no cover - a regular member always has a reader
        raise InputError(f"image tree: {_show(path)} cannot be read")
    digest = hashlib.sha256()
    read = 0
    with handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
            read += len(block)
    if read != member.size:
        raise InputError(f"image tree: {_show(path)} is truncated")
    return digest.hexdigest().encode()


def _xattrs(member: tarfile.TarInfo, path: bytes, limits: TreeLimits) -> list[bytes]:
    found: list[tuple[bytes, bytes]] = []
    for key, value in member.pax_headers.items():
        if not key.startswith(_XATTR_PREFIX):
            continue
        name, data = _raw(key[len(_XATTR_PREFIX):]), _raw(value)
        if len(data) > limits.max_xattr_bytes or not name:
            raise InputError(f"image tree: {_show(path)} has an empty or oversized xattr")
        found.append((name, data))
    if len(found) > limits.max_xattrs:
        raise InputError(f"image tree: {_show(path)} has more than {limits.max_xattrs} xattrs")
    return [b"xattr:" + _pct(name) + b"=" + data.hex().encode() for name, data in sorted(found)]


def _raw(text: str) -> bytes:
    """The bytes tarfile decoded ``text`` from (utf-8 with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def _normalise(name: bytes, max_bytes: int) -> bytes:
    if len(name) > max_bytes:
        raise InputError(f"image tree: a path is longer than {max_bytes} bytes")
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise InputError(f"image tree: {_show(name)} has a '..' segment")
    return b"/".join(parts)


def _excluded(path: bytes) -> bool:
    return any(path == name or path.startswith(name + b"/") for name in _EXCLUDED)


def _pct(data: bytes) -> bytes:
    return _UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], data)


def _show(path: bytes) -> str:
    """A path for an error message (percent-encoded, as listed)."""
    return _pct(path[:200]).decode("ascii")


def _string(config: Mapping[str, Any], name: str) -> str:
    value = config.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"image config: {name} is not a string")
    return value


def _strings(config: Mapping[str, Any], name: str) -> list[str]:
    value = config.get(name)
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) \
            or not all(isinstance(v, str) for v in value):
        raise InputError(f"image config: {name} is not a list of strings")
    return list(value)


def _keys(config: Mapping[str, Any], name: str) -> list[str]:
    value = config.get(name)
    if value is None:
        return []
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InputError(f"image config: {name} is not an object")
    return sorted(value)
