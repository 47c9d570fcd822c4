"""Property tests of `package.py`: any bytes are a package the firmware applies, or refused.

Arbitrary bytes reach only the first checks of the format, so most examples here are archives
built field by field (our own ustar writer, not `tarfile`, so that every field can be wrong):
valid ones, with their directories first, `./` prefixes, space-padded numbers and record padding,
and the same with exactly one defect the firmware would trip over. The check must accept the
first and describe them exactly, and refuse the second with `PackageFormatError` — never raise
anything else. The same holds inside the microfreezer layout of a `.tar.gz`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
import gzip
import hashlib
import zlib

from hypothesis import event, example, given, strategies as st
import pytest

from custom_components.insighio_ota.package import (
    BLOCK,
    NAME_LIMIT,
    PackageFormatError,
    check_package,
)

from .budget import fuzz_settings

FILE_TYPES = st.sampled_from([".tar", ".tar.gz"])


@dataclass(frozen=True, slots=True)
class Member:
    """One archive member as the test writes it; every header field can be set on purpose."""

    name: bytes
    body: bytes = b""
    typeflag: bytes = b"0"
    magic: bytes = b"ustar\0"
    version: bytes = b"00"
    prefix: bytes = b""
    size_field: bytes | None = None
    space_padded: bool = False
    bad_checksum: bool = False

    def header(self) -> bytes:
        """Return the 512-byte ustar header of the member."""

        def number(value: int, width: int) -> bytes:
            digits = f"{value:o}".encode()
            if self.space_padded:
                return digits.rjust(width - 1) + b" "
            return digits.rjust(width - 1, b"0") + b"\0"

        size = self.size_field if self.size_field is not None else number(len(self.body), 12)
        fields = [
            self.name.ljust(100, b"\0")[:100],
            number(0o755 if self.typeflag == b"5" else 0o644, 8),
            number(0, 8),
            number(0, 8),
            size.ljust(12, b"\0")[:12],
            number(1_735_689_600, 12),
            b" " * 8,
            self.typeflag,
            bytes(100),
            self.magic.ljust(6, b"\0")[:6],
            self.version.ljust(2, b"\0")[:2],
            b"root".ljust(32, b"\0"),
            b"root".ljust(32, b"\0"),
            number(0, 8),
            number(0, 8),
            self.prefix.ljust(155, b"\0")[:155],
            bytes(12),
        ]
        header = bytearray(b"".join(fields))
        assert len(header) == BLOCK
        checksum = sum(header) + (1 if self.bad_checksum else 0)
        header[148:156] = f"{checksum:06o}".encode() + b"\0 "
        return bytes(header)

    def block(self) -> bytes:
        """Return the header, then the body padded to whole blocks."""
        return self.header() + self.body + bytes(-len(self.body) % BLOCK)


@dataclass(slots=True)
class Archive:
    """An archive being built, and what the check should say of it."""

    members: list[Member]
    # Zero bytes after the two end blocks: what tar's 10 KiB records add.
    padding: int = 0
    sw_commit: str | None = None
    sw_branch: str | None = None
    # Set when the archive was given a defect: the check must refuse it.
    defect: str | None = None
    extra: dict[str, int] = field(default_factory=dict)

    def content(self) -> bytes:
        """Return the archive's bytes."""
        end = bytes(2 * BLOCK)
        return b"".join(member.block() for member in self.members) + end + bytes(self.padding)


# One level of a path: never "/" or NUL (they end or split a name), never "." or "..".
SEGMENTS = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=8,
).filter(lambda segment: segment not in (".", "..", "version.py"))
COMMITS = st.from_regex(r"[0-9a-f]{7,40}", fullmatch=True)
BRANCHES = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)


@st.composite
def valid_archives(draw: st.DrawFn) -> Archive:
    """Return an archive the firmware applies: directories before their content, a file or more."""
    paths = draw(st.lists(st.lists(SEGMENTS, min_size=1, max_size=3), min_size=1, max_size=6))
    file_paths = ["/".join(path) for path in paths]
    # A path that is also another's directory is a directory, not a file.
    file_paths = [
        path
        for path in dict.fromkeys(file_paths)
        if not any(other.startswith(path + "/") for other in file_paths)
    ]
    # Sorted: the order of a set of strings changes from one process to the next, and so would
    # the examples of a derandomized run.
    version_dir = draw(
        st.sampled_from(sorted({"", *(path.rpartition("/")[0] for path in file_paths)}))
    )
    commit = branch = None
    if draw(st.booleans()):
        commit, branch = draw(COMMITS), draw(st.none() | BRANCHES)
        file_paths.append(f"{version_dir}/version.py".lstrip("/"))
    empty_dirs = draw(st.lists(st.lists(SEGMENTS, min_size=1, max_size=2), max_size=2))
    dot_slash = draw(st.booleans())
    members: list[Member] = []
    created: set[str] = set()
    if dot_slash and draw(st.booleans()):
        members.append(Member(b"./", typeflag=b"5"))

    def name(path: str, directory: bool) -> bytes:
        text = ("./" if dot_slash else "") + path + ("/" if directory else "")
        return text.encode()

    def create_parents(path: str) -> None:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in created:
                created.add(parent)
                members.append(Member(name(parent, directory=True), typeflag=b"5"))

    for path in file_paths:
        create_parents(path)
        if path.endswith("version.py") and commit is not None:
            body = f'sw_commit = "{commit}"\n'.encode()
            if branch is not None:
                body += f"sw_branch = '{branch}'\n".encode()
        else:
            body = draw(st.binary(max_size=700))
        members.append(
            Member(name(path, directory=False), body, draw(st.sampled_from([b"0", b"\0"])))
        )
    for segments in empty_dirs:
        path = "/".join(segments)
        ancestors = ["/".join(segments[:depth]) for depth in range(1, len(segments) + 1)]
        if any(ancestor in file_paths for ancestor in ancestors) or any(
            f.startswith(path + "/") for f in file_paths
        ):
            continue  # A file has that name: it cannot be (or hold) a directory too.
        create_parents(path + "/x")
        if path not in created:
            created.add(path)
            members.append(Member(name(path, directory=True), typeflag=b"5"))
    space_padded = draw(st.booleans())
    members = [replace(member, space_padded=space_padded) for member in members]
    if any(len(member.name) > NAME_LIMIT for member in members):
        # Too long for the name field: not this strategy's archive (the prefix defect covers it).
        members = [Member(b"main.py", b"print(1)\n")]
        commit = branch = None
    return Archive(
        members,
        padding=draw(st.sampled_from([0, 0, BLOCK, 20 * BLOCK - 2 * BLOCK])),
        sw_commit=commit,
        sw_branch=branch,
    )


def _at(draw: st.DrawFn, archive: Archive) -> int:
    """Return the index of the member a defect goes to."""
    return draw(st.integers(0, len(archive.members) - 1))


def _files(archive: Archive) -> list[int]:
    return [i for i, m in enumerate(archive.members) if m.typeflag != b"5"]


def _directories(archive: Archive) -> list[int]:
    return [i for i, m in enumerate(archive.members) if m.typeflag == b"5" and m.name != b"./"]


def _change(draw: st.DrawFn, archive: Archive, **fields: object) -> None:
    """Change header fields of one member."""
    at = _at(draw, archive)
    archive.members[at] = replace(archive.members[at], **fields)  # type: ignore[arg-type]


def _bad_magic(draw: st.DrawFn, archive: Archive) -> None:
    magic = draw(
        st.sampled_from([b"ustar ", b"USTAR\0", b"\0" * 6]) | st.binary(min_size=6, max_size=6)
    )
    _change(draw, archive, magic=b"ustaR\0" if magic == b"ustar\0" else magic)


def _bad_typeflag(draw: st.DrawFn, archive: Archive) -> None:
    typeflag = draw(st.sampled_from([bytes([b]) for b in range(256) if b not in b"05\0"]))
    _change(draw, archive, typeflag=typeflag)


def _absolute(draw: st.DrawFn, archive: Archive) -> None:
    at = _at(draw, archive)
    member = archive.members[at]
    archive.members[at] = replace(member, name=b"/" + member.name.removeprefix(b"./"))


def _out_of_order(draw: st.DrawFn, archive: Archive) -> None:
    """Move a file that sits in a directory before that directory's entry."""
    nested = [i for i in _files(archive) if b"/" in archive.members[i].name.removeprefix(b"./")]
    if not nested:
        archive.members[:] = [Member(b"a/b.py", b"x")]
        return
    archive.members.insert(0, archive.members.pop(draw(st.sampled_from(nested))))


def _directory_named_like_a_file(draw: st.DrawFn, archive: Archive) -> None:
    name = archive.members[draw(st.sampled_from(_files(archive)))].name
    archive.members.append(Member(name + b"/", typeflag=b"5"))


def _file_named_like_a_directory(draw: st.DrawFn, archive: Archive) -> None:
    directories = _directories(archive)
    if not directories:
        archive.members.append(Member(b"d/", typeflag=b"5"))
        directories = [len(archive.members) - 1]
    name = archive.members[draw(st.sampled_from(directories))].name.rstrip(b"/")
    archive.members.append(Member(name, b"x"))


def _size_too_big(draw: st.DrawFn, archive: Archive) -> None:
    """Declare one byte more for the last member than the archive holds after its header."""
    last = archive.members[-1]
    declared = len(last.body) + -len(last.body) % BLOCK + 2 * BLOCK + archive.padding + 1
    archive.members[-1] = replace(last, size_field=f"{declared:011o}".encode())


def _truncated(draw: st.DrawFn, archive: Archive) -> None:
    archive.extra["cut"] = draw(st.integers(0, len(archive.content()) - archive.padding - 1))


# Each defect makes an archive the firmware cannot apply; `broken_archives` picks one.
DEFECTS: dict[str, Callable[[st.DrawFn, Archive], None]] = {
    "checksum": lambda draw, archive: _change(draw, archive, bad_checksum=True),
    "magic": _bad_magic,
    "version": lambda draw, archive: _change(
        draw, archive, version=draw(st.sampled_from([b"  ", b" \0", b"01", b"\0\0"]))
    ),
    "typeflag": _bad_typeflag,
    "prefix": lambda draw, archive: _change(
        draw,
        archive,
        prefix=draw(st.binary(max_size=154).map(lambda p: p + b"x")),
    ),
    "absolute": _absolute,
    "dotdot": lambda draw, archive: archive.members.insert(
        _at(draw, archive), Member(draw(st.sampled_from([b"../x.py", b"a/../../x", b"./.."])), b"x")
    ),
    "order": _out_of_order,
    "directory_named_like_a_file": _directory_named_like_a_file,
    "file_named_like_a_directory": _file_named_like_a_directory,
    "size_field": lambda draw, archive: _change(
        draw,
        archive,
        size_field=draw(st.sampled_from([b"9", b"12a", b"\x80" + bytes(10) + b"\x01", b"-1"])),
    ),
    "size_too_big": _size_too_big,
    "no_files": lambda _draw, archive: archive.members.__setitem__(
        slice(None), [m for m in archive.members if m.typeflag == b"5"]
    ),
    "empty_name": lambda draw, archive: _change(draw, archive, name=b""),
    "not_utf8": lambda draw, archive: _change(draw, archive, name=b"\xff\xfe.py"),
    "root_as_a_file": lambda draw, archive: archive.members.insert(
        _at(draw, archive), Member(draw(st.sampled_from([b".", b"./", b"./."])), b"x")
    ),
    "truncated": _truncated,
    "trailing_data": lambda draw, archive: archive.extra.__setitem__(
        "trailing", draw(st.integers(1, 255))
    ),
}


@st.composite
def broken_archives(draw: st.DrawFn) -> Archive:
    """Return a valid archive given exactly one defect the firmware cannot live with."""
    archive = draw(valid_archives())
    defect = draw(st.sampled_from(sorted(DEFECTS)))
    DEFECTS[defect](draw, archive)
    archive.defect = defect
    return archive


def archive_bytes(archive: Archive) -> bytes:
    """Return the archive's bytes, with the defects that are about the whole of them."""
    content = archive.content()
    if "cut" in archive.extra:
        content = content[: archive.extra["cut"]]
    if "trailing" in archive.extra:
        content += bytes([archive.extra["trailing"]])
    return content


def microfreezer(tar: bytes, skipped: bytes, level: int) -> bytes:
    """Return a `.tar.gz` the firmware reads: 8 bytes it skips, then a raw zlib stream."""
    return skipped + zlib.compress(tar, level)


def _check_report(archive: Archive, content: bytes, file_type: str) -> None:
    """Check the report of a valid archive against what was written into it."""
    report = check_package(content, file_type)
    assert report.members == tuple(member.name.decode() for member in archive.members)
    assert report.size == len(content)
    assert report.sha256 == hashlib.sha256(content).hexdigest()
    assert (report.sw_commit, report.sw_branch) == (archive.sw_commit, archive.sw_branch)


@fuzz_settings("package_archives")
@given(
    archive=st.one_of(valid_archives(), broken_archives(), broken_archives()),
    layout=st.sampled_from(["tar", "microfreezer", "microfreezer", "gzip", "cut_stream"]),
    skipped=st.binary(min_size=8, max_size=8),
    level=st.integers(0, 9),
)
def test_archives_are_accepted_exactly_when_the_firmware_can_apply_them(
    archive: Archive, layout: str, skipped: bytes, level: int
) -> None:
    """A valid archive is accepted and described; one defect, anywhere, is refused."""
    tar = archive_bytes(archive)
    if layout == "tar":
        content, file_type = tar, ".tar"
    elif layout == "microfreezer":
        content, file_type = microfreezer(tar, skipped, level), ".tar.gz"
    elif layout == "gzip":
        # A real gzip file: the firmware needs the microfreezer layout and would fail.
        content, file_type = gzip.compress(tar, level), ".tar.gz"
        archive = replace(archive, defect="real gzip")
    else:
        stream = microfreezer(tar, skipped, level)
        content, file_type = stream[: len(stream) - 1 - len(stream) // 3], ".tar.gz"
        archive = replace(archive, defect="cut zlib stream")
    event(f"{layout}: {archive.defect or 'valid'}")
    if archive.defect is None:
        _check_report(archive, content, file_type)
    else:
        with pytest.raises(PackageFormatError):
            check_package(content, file_type)


@fuzz_settings("package_bytes")
@given(
    content=st.one_of(
        st.binary(max_size=3 * BLOCK),
        # A valid archive with a few bytes overwritten: deep branches, any values.
        st.tuples(
            valid_archives().map(archive_bytes),
            st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
        ).map(lambda drawn: _overwrite(*drawn)),
        st.tuples(st.binary(min_size=8, max_size=8), st.binary(max_size=2 * BLOCK)).map(
            lambda drawn: drawn[0] + zlib.compress(drawn[1])
        ),
    ),
    file_type=FILE_TYPES | st.text(max_size=8),
)
@example(content=b"\x1f\x8b\x08\x00" + bytes(12), file_type=".tar.gz")
@example(content=bytes(BLOCK), file_type=".tar")
def test_any_bytes_are_a_report_or_refused(content: bytes, file_type: str) -> None:
    """Whatever the bytes and the type, the check describes a package or refuses it, only."""
    try:
        report = check_package(content, file_type)
    except PackageFormatError:
        return
    assert file_type in (".tar", ".tar.gz")
    assert report.members
    assert report.size == len(content)
    for name in report.members:
        assert not name.startswith("/")
        assert ".." not in name.split("/")


def _overwrite(content: bytes, changes: list[tuple[int, int]]) -> bytes:
    """Return the content with the byte at each offset (modulo its length) replaced."""
    changed = bytearray(content)
    for offset, value in changes:
        changed[offset % len(changed)] = value
    return bytes(changed)
