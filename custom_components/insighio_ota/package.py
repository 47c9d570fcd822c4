"""Decide whether the insighioNode firmware can apply a package, and say exactly why not.

Pure: imports nothing from Home Assistant. The firmware (v4.1.0) reads packages with a small tar
reader of its own, so the rules here are those of that reader, not of Python's `tarfile` (which
understands PAX and GNU extensions and would hide exactly what the device gets wrong):

- `.tar`: plain POSIX ustar (magic `ustar` and a NUL, version `00`). The device reads only the
  100-byte name field, so a name in the ustar prefix field, in a PAX header (`x`, `g`) or in a GNU
  long name header (`L`, `K`) is refused: the device would write the extension header as a junk
  file under a truncated name. Links (`1`, `2`) and other special members are refused too. Every
  header checksum must be right and the archive must end with its two zero blocks.
- Paths are relative to the device root: absolute paths and `..` are refused; a leading `./` is
  allowed (the device resolves it against its root).
- Directories: the device writes a file with a plain `open()`, which fails when its directory does
  not exist. `protocol.md` promises nothing about which directories a device already has (only
  its root), so every directory must be created by a directory entry of the archive *before* the
  files and directories inside it. Only top-level members need none.
- `.tar.gz`: only the microfreezer layout the firmware inflates: 8 bytes it skips, then a raw
  zlib stream, which must hold a tar that passes the rules above. A real gzip file is refused.

Anything else (other types, an empty archive, garbage) is refused as well.
"""

from dataclasses import dataclass
import hashlib
import posixpath
import re
import zlib

BLOCK = 512
NAME_LIMIT = 100
# The firmware skips this many bytes before it inflates a `.tar.gz` as a zlib stream.
MICROFREEZER_SKIP = 8
GZIP_MAGIC = b"\x1f\x8b"
# Packages land in a device's flash (a few MB at most); a stream that inflates past this is no
# package a device could hold, and inflating it further would only cost HA memory.
MAX_INFLATED_SIZE = 32 * 1024 * 1024
FILE_TYPES = (".tar", ".tar.gz")

_USTAR_MAGIC = b"ustar\0"
_USTAR_VERSION = b"00"
_GNU_MAGIC = b"ustar  \0"
_REGULAR = (b"0", b"\0")
_DIRECTORY = b"5"
_REFUSED_TYPES: dict[bytes, str] = {
    b"1": "a hard link, which the firmware cannot create",
    b"2": "a symbolic link, which the firmware cannot create",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"x": "a PAX extended header, which the firmware would write as a junk file",
    b"g": "a PAX global header, which the firmware would write as a junk file",
    b"L": "a GNU long name header, which the firmware would write as a junk file",
    b"K": "a GNU long link name header, which the firmware would write as a junk file",
}

_COMMIT_RE = re.compile(r"""^\s*sw_commit\s*=\s*["']([^"'\n]*)["']""", re.MULTILINE)
_BRANCH_RE = re.compile(r"""^\s*sw_branch\s*=\s*["']([^"'\n]*)["']""", re.MULTILINE)


class PackageFormatError(ValueError):
    """The firmware cannot apply the package; the message says which member and which rule."""


@dataclass(frozen=True, slots=True)
class PackageReport:
    """What a package the firmware can apply holds."""

    size: int
    sha256: str
    # Member names as the archive stores them, in archive order.
    members: tuple[str, ...]
    # From a `version.py` member, when the package ships one: what /stat reports afterwards.
    sw_commit: str | None = None
    sw_branch: str | None = None


def check_package(content: bytes, file_type: str) -> PackageReport:
    """Return what the package holds, or raise `PackageFormatError` saying why it cannot apply."""
    if file_type in FILE_TYPES and not content:
        raise PackageFormatError("the package is empty")
    if file_type == ".tar":
        tar = content
        where = ""
    elif file_type == ".tar.gz":
        tar = _inflate_microfreezer(content)
        where = " (inside the microfreezer stream)"
    else:
        raise PackageFormatError(
            f"the firmware applies only {' and '.join(FILE_TYPES)} packages, not {file_type!r}"
        )
    try:
        members, sw_commit, sw_branch = _read_ustar(tar)
    except PackageFormatError as err:
        raise PackageFormatError(f"{err}{where}") from None
    return PackageReport(
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        members=members,
        sw_commit=sw_commit,
        sw_branch=sw_branch,
    )


def _inflate_microfreezer(content: bytes) -> bytes:
    """Inflate a `.tar.gz` the way the firmware does: skip 8 bytes, then a raw zlib stream."""
    inflater = zlib.decompressobj()
    try:
        tar = inflater.decompress(content[MICROFREEZER_SKIP:], MAX_INFLATED_SIZE)
    except zlib.error as err:
        if _is_real_gzip(content):
            raise PackageFormatError(
                "the .tar.gz is a real gzip file; the firmware needs the microfreezer layout "
                "(8 header bytes, then a zlib stream) and would fail with 'can not apply'"
            ) from None
        raise PackageFormatError(
            f"the .tar.gz is not in the microfreezer layout: no zlib stream after its first "
            f"8 bytes ({err})"
        ) from None
    if inflater.unconsumed_tail:
        raise PackageFormatError(
            f"the .tar.gz inflates to more than {MAX_INFLATED_SIZE} bytes, more than a device "
            "can hold"
        )
    if not inflater.eof:
        raise PackageFormatError("the .tar.gz is truncated: its zlib stream does not end")
    return tar


def _is_real_gzip(content: bytes) -> bool:
    """Return True for a gzip header (RFC 1952): magic, deflate method, no reserved flags."""
    return len(content) >= 10 and content[:2] == GZIP_MAGIC and content[2] == 8 and content[3] < 32


def _read_ustar(tar: bytes) -> tuple[tuple[str, ...], str | None, str | None]:
    """Walk the 512-byte blocks of a ustar archive; return member names and the sw version."""
    members: list[str] = []
    directories: set[str] = {""}
    file_paths: set[str] = set()
    files = 0
    sw_commit: str | None = None
    sw_branch: str | None = None
    offset = 0
    while True:
        header = tar[offset : offset + BLOCK]
        if len(header) < BLOCK:
            raise _short_archive(tar, offset)
        if header == bytes(BLOCK):
            _check_end(tar, offset)
            break
        name, typeflag, size = _parse_header(header, offset, is_first=not members)
        body_start = offset + BLOCK
        body_end = body_start + size
        if body_end > len(tar):
            raise PackageFormatError(
                f"member {name!r} is truncated: it declares {size} bytes, the archive has "
                f"{max(len(tar) - body_start, 0)}"
            )
        path = _member_path(name)
        parent = posixpath.dirname(path)
        if parent not in directories:
            raise PackageFormatError(
                f"member {name!r} comes before a directory entry for {parent + '/'!r}: the "
                "firmware cannot write into a directory the archive has not created yet"
            )
        members.append(name)
        if typeflag == _DIRECTORY:
            if path in file_paths:
                raise PackageFormatError(f"member {name!r} is a directory with a file's name")
            directories.add(path)
        elif path:
            if path in directories:
                raise PackageFormatError(f"member {name!r} is a file with a directory's name")
            files += 1
            file_paths.add(path)
            if posixpath.basename(path) == "version.py":
                sw_commit, sw_branch = _read_version(tar[body_start:body_end])
        else:
            raise PackageFormatError(f"member {name!r} is a file without a name")
        offset = body_start + -(-size // BLOCK) * BLOCK
    if not files:
        raise PackageFormatError("the archive holds no file, so it would install nothing")
    return tuple(members), sw_commit, sw_branch


def _short_archive(tar: bytes, offset: int) -> PackageFormatError:
    """Return the error for an archive that stops before a full header block."""
    if offset == 0:
        return PackageFormatError("not a tar archive: shorter than one 512-byte header")
    return PackageFormatError(
        f"the archive is truncated: it ends at byte {len(tar)} without the two zero blocks that "
        "mark the end of a tar archive"
    )


def _read_version(body: bytes) -> tuple[str | None, str | None]:
    """Return `sw_commit` and `sw_branch` as a `version.py` member assigns them."""
    text = body.decode("utf-8", errors="replace")
    commit = match.group(1).strip() if (match := _COMMIT_RE.search(text)) else None
    branch = match.group(1).strip() if (match := _BRANCH_RE.search(text)) else None
    return commit or None, branch or None


def _check_end(tar: bytes, offset: int) -> None:
    """Require the two zero blocks that end a tar archive, and only zero padding after them."""
    end = tar[offset + BLOCK : offset + 2 * BLOCK]
    if end != bytes(BLOCK):
        raise PackageFormatError(
            f"the archive is truncated or damaged at byte {offset}: a tar archive ends with two "
            "zero blocks"
        )
    rest = tar[offset + 2 * BLOCK :]
    if rest.strip(b"\0"):
        raise PackageFormatError(
            f"the archive has data after its end-of-archive blocks (byte {offset + 2 * BLOCK}), "
            "which the firmware would ignore"
        )


def _parse_header(header: bytes, offset: int, *, is_first: bool) -> tuple[str, bytes, int]:
    """Check one header block; return the member name, its type flag and its size."""
    raw_name = header[:NAME_LIMIT].split(b"\0", 1)[0]
    try:
        expected = _octal(header[148:156])
    except ValueError:
        expected = -1
    actual = sum(header[:148]) + 8 * ord(" ") + sum(header[156:])
    if expected != actual:
        if is_first:
            raise PackageFormatError("not a tar archive: its first header has a wrong checksum")
        raise PackageFormatError(
            f"the header at byte {offset} has a wrong checksum (damaged archive)"
        )
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise PackageFormatError(
            f"the member name at byte {offset} is not UTF-8: {raw_name!r}"
        ) from None
    label = f"member {name!r}"
    typeflag = header[156:157]
    if typeflag in _REFUSED_TYPES:
        raise PackageFormatError(f"{label} is {_REFUSED_TYPES[typeflag]}")
    magic = header[257:263]
    if header[257:265] == _GNU_MAGIC:
        raise PackageFormatError(
            f"{label} has an old GNU tar header; write the archive in ustar format "
            "(e.g. tar --format=ustar)"
        )
    if magic != _USTAR_MAGIC or header[263:265] != _USTAR_VERSION:
        raise PackageFormatError(
            f"{label} has no ustar header (magic {magic!r}, version {header[263:265]!r}); the "
            "firmware needs plain ustar"
        )
    if typeflag not in (*_REGULAR, _DIRECTORY):
        raise PackageFormatError(f"{label} has the unknown member type {typeflag!r}")
    if header[345:500].strip(b"\0"):
        raise PackageFormatError(
            f"{label} uses the ustar prefix field (its full name is longer than "
            f"{NAME_LIMIT} bytes); the firmware reads only the {NAME_LIMIT}-byte name"
        )
    if not name:
        raise PackageFormatError(f"the header at byte {offset} has an empty member name")
    try:
        size = _octal(header[124:136])
    except ValueError:
        raise PackageFormatError(f"{label} has an invalid size field") from None
    return name, typeflag, size


def _octal(field: bytes) -> int:
    """Parse a NUL/space padded octal field; base-256 (GNU) and junk raise ValueError."""
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= byte <= 55 for byte in text):  # "0".."7"
        raise ValueError(text)
    return int(text, 8)


def _member_path(name: str) -> str:
    """Return a member's path relative to the device root; refuse absolute paths and `..`."""
    if name.startswith("/"):
        raise PackageFormatError(
            f"member {name!r} has an absolute path; paths are relative to the device root"
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PackageFormatError(f"member {name!r} has '..' in its path")
    return "/".join(parts)
