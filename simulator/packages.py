"""Build OTA packages, and read them the way the firmware's tar reader does.

The builders give tests and the demo packages in every shape that matters: the safe plain ustar
``.tar``, a PAX ``.tar`` (which the firmware "applies" while writing junk files), the
microfreezer ``.tar.gz`` layout (the only ``.tar.gz`` the firmware can read), a real gzip tarball
(which fails with ``can not apply``) and bytes that are no archive at all.

The reader mimics MicroPython's small tar reader rather than Python's ``tarfile``: ``tarfile``
understands PAX and GNU extension headers and would hide exactly the behaviour we must simulate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import gzip
import hashlib
import io
from pathlib import Path
import posixpath
import re
import tarfile
from typing import Literal
import zlib

PackageFormat = Literal["ustar", "pax", "microfreezer", "gzip", "garbage"]

#: The file type (with its leading dot, as the OTA request's ``t`` carries it) of each format.
PACKAGE_EXTENSIONS: dict[PackageFormat, str] = {
    "ustar": ".tar",
    "pax": ".tar",
    "microfreezer": ".tar.gz",
    "gzip": ".tar.gz",
    "garbage": ".tar",
}

#: The eight bytes microfreezer writes in place of a real gzip header; the firmware skips them and
#: inflates the rest as a zlib stream.
MICROFREEZER_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"

# A fixed modification time keeps packages byte-for-byte reproducible, so their sizes and hashes
# can be asserted by tests and quoted in documentation.
_MTIME = 1_735_689_600

# Directories that exist on a freshly flashed device. The firmware writes files with plain
# ``open()``, which fails when the parent directory is missing, so a package must either target
# these or create its directories before the files in them.
DEVICE_BASE_DIRECTORIES = frozenset({"", "apps", "apps/demo_console", "lib"})

DEMO_SW_COMMIT = "4f1c2a9"
DEMO_OK_FILE_ID = "4f1c2a9e"
DEMO_BAD_FILE_ID = "0badf00d"


class PackageError(Exception):
    """The package cannot be applied; the device reports ``can not apply``."""


@dataclass(slots=True)
class PackageContents:
    """What applying a package would write on the device."""

    files: dict[str, bytes] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)
    junk_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sw_commit: str | None = None
    sw_branch: str | None = None


def _app_files(sw_commit: str | None, sw_branch: str | None, files: int) -> dict[str, bytes]:
    """Return the files a demo package carries, in the order they are archived."""
    content: dict[str, bytes] = {}
    if sw_commit is not None:
        # The firmware keeps its application version in ``version.py``; shipping that module is
        # the only way a package changes what ``/stat`` reports.
        lines = []
        if sw_branch is not None:
            lines.append(f'sw_branch = "{sw_branch}"')
        lines.append(f'sw_commit = "{sw_commit}"')
        content["version.py"] = ("\n".join(lines) + "\n").encode()
    for number in range(max(files, 1)):
        name = "scenario.py" if number == 0 else f"module_{number}.py"
        body = (
            f'"""Demo application file {number + 1} delivered over the air."""\n\n'
            f"def execute():\n    return {number}\n"
        )
        content[f"apps/demo_console/{name}"] = body.encode()
    return content


def _build_tar(content: dict[str, bytes], *, pax: bool) -> bytes:
    """Archive the given files, writing each directory entry before the files inside it."""
    buffer = io.BytesIO()
    tar_format = tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        written_dirs: set[str] = set()
        for name, data in content.items():
            parent = posixpath.dirname(name)
            parents: list[str] = []
            while parent and parent not in written_dirs:
                parents.insert(0, parent)
                parent = posixpath.dirname(parent)
            for directory in parents:
                info = tarfile.TarInfo(directory)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = _MTIME
                _add_pax_marker(info, pax)
                archive.addfile(info)
                written_dirs.add(directory)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = _MTIME
            _add_pax_marker(info, pax)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _add_pax_marker(info: tarfile.TarInfo, pax: bool) -> None:
    """Force a PAX extended header in front of the member.

    Python only writes PAX headers when a field does not fit ustar; an explicit record makes the
    PAX package always contain them, as archives made by GNU tar or macOS usually do.
    """
    if pax:
        info.pax_headers = {"comment": "made by the insighio_ota simulator"}


def build_package(
    fmt: PackageFormat = "ustar",
    *,
    sw_commit: str | None = DEMO_SW_COMMIT,
    sw_branch: str | None = None,
    files: int = 1,
) -> bytes:
    """Return the bytes of a package in the given format.

    ``sw_commit``/``sw_branch`` go into a ``version.py`` member (none when ``sw_commit`` is
    None); ``files`` is the number of application files under ``apps/demo_console/``.
    """
    content = _app_files(sw_commit, sw_branch, files)
    if fmt == "ustar":
        return _build_tar(content, pax=False)
    if fmt == "pax":
        return _build_tar(content, pax=True)
    if fmt == "microfreezer":
        return MICROFREEZER_HEADER + zlib.compress(_build_tar(content, pax=False), 9)
    if fmt == "gzip":
        return gzip.compress(_build_tar(content, pax=False), compresslevel=9, mtime=0)
    if fmt == "garbage":
        # Deterministic noise; a header checksum over it cannot match, so no reader takes it for
        # a tar archive.
        chunks = [hashlib.sha256(f"garbage {n}".encode()).digest() for n in range(64)]
        return b"this is not a tar archive\n" + b"".join(chunks)
    raise ValueError(f"unknown package format {fmt!r}")


def package_file_name(file_id: str, fmt: PackageFormat) -> str:
    """Return the file name the console stand-in serves a package under."""
    return file_id + PACKAGE_EXTENSIONS[fmt]


def write_package(
    out_dir: Path,
    file_id: str,
    fmt: PackageFormat = "ustar",
    *,
    sw_commit: str | None = DEMO_SW_COMMIT,
    sw_branch: str | None = None,
    files: int = 1,
) -> Path:
    """Build a package and write it as ``<file_id><type>`` into ``out_dir``."""
    if not file_id or "." in file_id or "/" in file_id:
        raise ValueError("a file id must be non-empty and contain no dot or slash")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / package_file_name(file_id, fmt)
    path.write_bytes(build_package(fmt, sw_commit=sw_commit, sw_branch=sw_branch, files=files))
    return path


def write_demo_packages(out_dir: Path) -> list[Path]:
    """Write the two demo packages: one that applies and one the firmware cannot apply."""
    return [
        write_package(out_dir, DEMO_OK_FILE_ID, "ustar", sw_commit=DEMO_SW_COMMIT),
        write_package(out_dir, DEMO_BAD_FILE_ID, "gzip", sw_commit="badbad0"),
    ]


def _octal(field_bytes: bytes, what: str) -> int:
    """Parse a NUL/space padded octal header field, as the firmware's ``int(x, 8)`` would."""
    text = field_bytes.rstrip(b"\0 ").lstrip(b" ")
    try:
        return int(text.decode("ascii"), 8) if text else 0
    except (UnicodeDecodeError, ValueError) as err:
        raise PackageError(f"bad {what} field in tar header") from err


def _check_header(header: bytes) -> None:
    """Reject blocks that are not tar headers.

    The firmware's reader would usually fail later on such data (bad size field, missing
    directory); checking the header checksum reaches the same ``can not apply`` outcome reliably.
    """
    expected = _octal(header[148:156], "checksum")
    actual = sum(header[:148]) + 8 * 0x20 + sum(header[156:])
    if expected != actual:
        raise PackageError("not a tar archive (header checksum mismatch)")


def _normalize(name: str) -> str:
    """Strip the ``./`` and ``/`` prefixes, which the firmware resolves against its root."""
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def read_tar(data: bytes) -> PackageContents:
    """Read a tar archive like the firmware's reader and return what it would write.

    Only the 100-byte name field is used (the ustar prefix field is ignored), PAX and GNU
    extension headers are taken for regular files and become junk files, and a file whose
    directory does not exist yet makes the whole apply fail.
    """
    contents = PackageContents()
    directories = set(DEVICE_BASE_DIRECTORIES)
    offset = 0
    members = 0
    while True:
        header = data[offset : offset + 512]
        if len(header) < 512 or header == bytes(512):
            break
        _check_header(header)
        try:
            name = _normalize(header[:100].split(b"\0", 1)[0].decode("utf-8"))
        except UnicodeDecodeError as err:
            raise PackageError("undecodable member name") from err
        if header[345:346] not in (b"\0", b""):
            contents.warnings.append(f"ignored ustar prefix field of member {name!r}")
        size = _octal(header[124:136], "size")
        typeflag = header[156:157]
        body = data[offset + 512 : offset + 512 + size]
        if len(body) < size:
            raise PackageError("truncated tar archive")
        offset += 512 + (size + 511) // 512 * 512
        members += 1
        if typeflag == b"5":
            parent = posixpath.dirname(name)
            if parent not in directories:
                raise PackageError(f"parent directory of {name!r} does not exist")
            directories.add(name)
            contents.directories.append(name)
            continue
        if typeflag in (b"1", b"2"):
            contents.warnings.append(f"skipped link member {name!r}")
            continue
        parent = posixpath.dirname(name)
        if parent not in directories:
            raise PackageError(f"directory of {name!r} does not exist")
        contents.files[name] = body
        if typeflag in (b"x", b"g", b"L", b"K"):
            contents.junk_files.append(name)
        elif posixpath.basename(name) == "version.py":
            _read_version(body, contents)
    if members == 0:
        raise PackageError("empty or truncated tar archive")
    return contents


_COMMIT_RE = re.compile(r"""^\s*sw_commit\s*=\s*["']([^"']*)["']""", re.MULTILINE)
_BRANCH_RE = re.compile(r"""^\s*sw_branch\s*=\s*["']([^"']*)["']""", re.MULTILINE)


def _read_version(body: bytes, contents: PackageContents) -> None:
    """Take the application version from a ``version.py`` member, if it declares one."""
    text = body.decode("utf-8", errors="replace")
    if match := _COMMIT_RE.search(text):
        contents.sw_commit = match.group(1)
    if match := _BRANCH_RE.search(text):
        contents.sw_branch = match.group(1)


def read_package(data: bytes, file_type: str) -> PackageContents:
    """Read a downloaded package of the given OTA file type, or raise :class:`PackageError`."""
    if file_type == ".tar":
        return read_tar(data)
    if file_type == ".tar.gz":
        # The firmware skips eight bytes and inflates a zlib stream: the microfreezer layout.
        # A real gzip header is ten bytes or more, so bytes 8 and 9 are no zlib header.
        try:
            tar = zlib.decompress(data[8:])
        except zlib.error as err:
            raise PackageError(f"cannot inflate: {err}") from err
        return read_tar(tar)
    raise PackageError(f"unsupported file type {file_type!r}")
