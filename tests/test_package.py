"""The package format check: what the insighioNode firmware can apply, and why not."""

import gzip
import hashlib
import io
import re
import tarfile
import zlib

import pytest

from custom_components.insighio_ota import package as package_module
from custom_components.insighio_ota.package import (
    PackageFormatError,
    PackageReport,
    check_package,
)

MICROFREEZER_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
END = bytes(1024)
VERSION_PY = b'"""Version."""\nsw_branch = "master"\nsw_commit = "4f1c2a9"\n'


def build_tar(
    entries: list[tuple[str, bytes | None]],
    *,
    tar_format: int = tarfile.USTAR_FORMAT,
    pax_headers: dict[str, str] | None = None,
) -> bytes:
    """Archive `(name, data)` entries with tarfile; data None makes a directory entry."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tar_format, pax_headers=pax_headers
    ) as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_735_689_600
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def header(
    name: bytes,
    typeflag: bytes = b"0",
    size: int = 0,
    *,
    magic: bytes = b"ustar\0",
    version: bytes = b"00",
    prefix: bytes = b"",
    size_field: bytes | None = None,
    checksum: bytes | None = None,
) -> bytes:
    """Return one tar header block built by hand, with a right checksum unless one is given."""
    block = bytearray(512)
    block[: len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = size_field if size_field is not None else b"%011o\0" % size
    block[136:148] = b"%011o\0" % 0
    block[156:157] = typeflag
    block[257:263] = magic
    block[263:265] = version
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b" " * 8
    block[148:156] = checksum if checksum is not None else b"%06o\0 " % sum(block)
    return bytes(block)


def member(name: bytes, data: bytes = b"", typeflag: bytes = b"0", **kwargs: bytes) -> bytes:
    """Return a header and its body padded to whole blocks."""
    padding = bytes(-len(data) % 512)
    return header(name, typeflag, len(data), **kwargs) + data + padding


APP = [
    ("version.py", VERSION_PY),
    ("apps", None),
    ("apps/demo_console", None),
    ("apps/demo_console/scenario.py", b"def execute():\n    return 1\n"),
]


def test_plain_ustar_is_accepted() -> None:
    """A tarfile USTAR archive with its directories first passes and is described."""
    content = build_tar(APP)

    report = check_package(content, ".tar")

    assert report == PackageReport(
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        members=("version.py", "apps/", "apps/demo_console/", "apps/demo_console/scenario.py"),
        sw_commit="4f1c2a9",
        sw_branch="master",
    )
    with pytest.raises(AttributeError):
        report.size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("body", "commit", "branch"),
    [
        (b"# nothing here\n", None, None),
        (b"sw_commit = ''\nsw_branch = ' '\n", None, None),
        (b"  sw_commit='abc1234'\n", "abc1234", None),
        (b'\xff\xfe sw_commit\nsw_commit = "dead"\n', "dead", None),
    ],
)
def test_version_py_parsing(body: bytes, commit: str | None, branch: str | None) -> None:
    """`sw_commit` and `sw_branch` come from the assignments of a `version.py` member."""
    report = check_package(build_tar([("lib", None), ("lib/version.py", body)]), ".tar")

    assert (report.sw_commit, report.sw_branch) == (commit, branch)


def test_no_version_py() -> None:
    """A package without `version.py` does not say which commit it installs."""
    report = check_package(build_tar([("main.py", b"print(1)\n")]), ".tar")

    assert report.members == ("main.py",)
    assert report.sw_commit is None
    assert report.sw_branch is None


def test_dot_slash_paths_resolve_to_the_root() -> None:
    """`./` members, as `tar -C dir .` writes them, are relative to the device root."""
    content = build_tar([(".", None), ("./apps", None), ("./apps/a.py", b"x"), ("./b.py", b"y")])

    assert check_package(content, ".tar").members == ("./", "./apps/", "./apps/a.py", "./b.py")


def test_hand_made_archive_with_exact_end() -> None:
    """Exactly two zero blocks end the archive; no record padding is needed."""
    content = member(b"a.py", b"1\n") + member(b"empty.py") + END

    assert check_package(content, ".tar").members == ("a.py", "empty.py")


def test_space_padded_numeric_fields() -> None:
    """Octal fields padded with spaces (as some tars write them) are read."""
    content = member(b"a.py", b"12", size_field=b"          2 ") + END

    assert check_package(content, ".tar").members == ("a.py",)


def test_pax_member_header_refused() -> None:
    """Python's default PAX format puts `x` headers before members: junk files on the device."""
    content = build_tar([("a" * 120 + ".py", b"1")], tar_format=tarfile.PAX_FORMAT)

    with pytest.raises(PackageFormatError, match="is a PAX extended header"):
        check_package(content, ".tar")


def test_pax_global_header_refused() -> None:
    """A PAX global header (`g`) is refused as well."""
    content = build_tar(
        [("a.py", b"1")], tar_format=tarfile.PAX_FORMAT, pax_headers={"comment": "hi"}
    )

    with pytest.raises(PackageFormatError, match="is a PAX global header"):
        check_package(content, ".tar")


def test_gnu_long_name_refused() -> None:
    """GNU long names (`L`) are refused."""
    content = build_tar([("a" * 120 + ".py", b"1")], tar_format=tarfile.GNU_FORMAT)

    with pytest.raises(PackageFormatError, match="is a GNU long name header"):
        check_package(content, ".tar")


def test_gnu_long_link_name_refused() -> None:
    """GNU long link names (`K`) are refused."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "t" * 120
        archive.addfile(info)

    with pytest.raises(PackageFormatError, match="is a GNU long link name header"):
        check_package(buffer.getvalue(), ".tar")


def test_gnu_header_refused() -> None:
    """An old GNU header (magic `ustar  `) is refused even with a short name."""
    content = build_tar([("a.py", b"1")], tar_format=tarfile.GNU_FORMAT)

    with pytest.raises(PackageFormatError, match=re.escape("'a.py' has an old GNU tar header")):
        check_package(content, ".tar")


def test_name_in_prefix_field_refused() -> None:
    """A ustar name longer than 100 bytes goes into the prefix field, which the device ignores."""
    long_dir = "d" * 60
    content = build_tar([(long_dir, None), (f"{long_dir}/{'f' * 60}.py", b"1")])

    with pytest.raises(PackageFormatError, match="uses the ustar prefix field"):
        check_package(content, ".tar")


def test_name_of_exactly_100_bytes_accepted() -> None:
    """A name filling the whole 100-byte field, without a NUL, is fine."""
    name = "n" * 97 + ".py"
    content = build_tar([(name, b"1")])

    assert check_package(content, ".tar").members == (name,)


@pytest.mark.parametrize(
    ("link_type", "message"), [(tarfile.LNKTYPE, "a hard link"), (tarfile.SYMTYPE, "a symbolic")]
)
def test_links_refused(link_type: bytes, message: str) -> None:
    """Hard and symbolic links cannot be created by the firmware."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("a.py")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"1"))
        link = tarfile.TarInfo("b.py")
        link.type = link_type
        link.linkname = "a.py"
        archive.addfile(link)

    with pytest.raises(PackageFormatError, match=f"member 'b.py' is {message}"):
        check_package(buffer.getvalue(), ".tar")


@pytest.mark.parametrize(
    ("typeflag", "message"),
    [
        (b"3", "is a character device"),
        (b"4", "is a block device"),
        (b"6", "is a FIFO"),
        (b"7", "is a contiguous file"),
        (b"Z", "has the unknown member type b'Z'"),
    ],
)
def test_special_members_refused(typeflag: bytes, message: str) -> None:
    """Only regular files and directories can be applied."""
    content = member(b"dev", typeflag=typeflag) + END

    with pytest.raises(PackageFormatError, match=message):
        check_package(content, ".tar")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [("apps/a.py", b"1")],
            r"member 'apps/a.py' comes before a directory entry for 'apps/'",
        ),
        (
            [("apps/demo", None)],
            r"member 'apps/demo/' comes before a directory entry for 'apps/'",
        ),
        (
            [("apps/a.py", b"1"), ("apps", None)],
            r"member 'apps/a.py' comes before a directory entry for 'apps/'",
        ),
        (
            [("lib", None), ("lib/x/y.py", b"1")],
            r"member 'lib/x/y.py' comes before a directory entry for 'lib/x/'",
        ),
    ],
)
def test_directories_must_come_first(entries: list[tuple[str, bytes | None]], message: str) -> None:
    """A file (or directory) in a directory the archive has not created yet is refused."""
    with pytest.raises(PackageFormatError, match=message):
        check_package(build_tar(entries), ".tar")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (b"/boot.py", "has an absolute path"),
        (b"../boot.py", "has '..' in its path"),
        (b"apps/../../boot.py", "has '..' in its path"),
    ],
)
def test_paths_outside_the_root_refused(name: bytes, message: str) -> None:
    """Absolute paths and `..` would write outside the package's place."""
    content = member(b"apps", typeflag=b"5") + member(name, b"1") + END

    with pytest.raises(PackageFormatError, match=message):
        check_package(content, ".tar")


def test_file_named_like_a_directory_refused() -> None:
    """A file cannot have the name of a directory the archive created."""
    content = member(b"apps/", typeflag=b"5") + member(b"apps", b"1") + END

    with pytest.raises(PackageFormatError, match="'apps' is a file with a directory's name"):
        check_package(content, ".tar")


def test_root_as_a_file_refused() -> None:
    """A regular member named `./` has no file name."""
    content = member(b"./", b"1") + END

    with pytest.raises(PackageFormatError, match=re.escape("'./' is a file without a name")):
        check_package(content, ".tar")


def test_empty_name_refused() -> None:
    """A header with an empty name is refused."""
    content = member(b"", b"1") + END

    with pytest.raises(PackageFormatError, match="header at byte 0 has an empty member name"):
        check_package(content, ".tar")


def test_undecodable_name_refused() -> None:
    """Names must be UTF-8."""
    content = member(b"a.py") + member(b"\xff\xfe.py") + END

    with pytest.raises(PackageFormatError, match="name at byte 512 is not UTF-8"):
        check_package(content, ".tar")


@pytest.mark.parametrize(
    ("magic", "version"),
    [(b"\0" * 6, b"\0\0"), (b"ustar\0", b"\0\0"), (b"ustar ", b"00")],
)
def test_not_ustar_refused(magic: bytes, version: bytes) -> None:
    """Pre-POSIX (v7) headers and wrong versions are refused."""
    content = member(b"a.py", b"1", magic=magic, version=version) + END

    with pytest.raises(PackageFormatError, match=re.escape("'a.py' has no ustar header")):
        check_package(content, ".tar")


@pytest.mark.parametrize("size_field", [b"\x80" + bytes(10) + b"\x01", b"12x4\0       "])
def test_invalid_size_field_refused(size_field: bytes) -> None:
    """GNU base-256 sizes and junk in the size field are refused."""
    content = header(b"a.py", size_field=size_field) + END

    with pytest.raises(PackageFormatError, match=re.escape("'a.py' has an invalid size field")):
        check_package(content, ".tar")


def test_first_header_checksum_wrong_means_not_a_tar() -> None:
    """Garbage is told apart from a tar by its header checksum."""
    garbage = b"this is not a tar archive\n" + b"".join(
        hashlib.sha256(bytes([n])).digest() for n in range(64)
    )

    with pytest.raises(PackageFormatError, match="not a tar archive: its first header"):
        check_package(garbage, ".tar")


@pytest.mark.parametrize("checksum", [b"0000001\0", b"notoctal"])
def test_damaged_header_checksum(checksum: bytes) -> None:
    """A later header with a wrong or unreadable checksum is a damaged archive."""
    content = member(b"a.py", b"1") + member(b"b.py", b"2", checksum=checksum) + END

    with pytest.raises(PackageFormatError, match="header at byte 1024 has a wrong checksum"):
        check_package(content, ".tar")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"short", "shorter than one 512-byte header"),
        (member(b"a.py", b"1" * 600)[:800], r"'a.py' is truncated: it declares 600 bytes"),
        (header(b"a.py", size=10), r"'a.py' is truncated: it declares 10 bytes, the archive has 0"),
        (member(b"a.py", b"1") + b"\0" * 100, "ends at byte 1124 without the two zero blocks"),
        (member(b"a.py", b"1"), "ends at byte 1024 without the two zero blocks"),
        (member(b"a.py", b"1") + bytes(512), "truncated or damaged at byte 1024"),
        (member(b"a.py", b"1") + bytes(512) + member(b"b.py"), "truncated or damaged"),
        (member(b"a.py", b"1") + END + b"\0" * 3 + b"x", "data after its end-of-archive blocks"),
        (END, "holds no file"),
        (member(b"apps/", typeflag=b"5") + END, "holds no file"),
    ],
)
def test_truncated_or_empty_archives(content: bytes, message: str) -> None:
    """Archives that stop early, end badly or install nothing are refused."""
    with pytest.raises(PackageFormatError, match=message):
        check_package(content, ".tar")


def test_record_padding_after_the_end_is_fine() -> None:
    """Zero padding up to tarfile's 10 KiB record follows the end blocks."""
    content = build_tar([("a.py", b"1")])

    assert len(content) == 10240
    assert check_package(content, ".tar").size == 10240


def test_microfreezer_accepted() -> None:
    """8 fake gzip bytes, then a zlib stream holding a ustar: what the firmware inflates."""
    content = MICROFREEZER_HEADER + zlib.compress(build_tar(APP), 9)

    report = check_package(content, ".tar.gz")

    assert report.size == len(content)
    assert report.sha256 == hashlib.sha256(content).hexdigest()
    assert report.sw_commit == "4f1c2a9"
    assert len(report.members) == 4


def test_real_gzip_refused() -> None:
    """A real gzip tarball fails on the device with `can not apply`: refused, saying why."""
    content = gzip.compress(build_tar(APP), mtime=0)

    with pytest.raises(PackageFormatError, match="is a real gzip file; the firmware needs the"):
        check_package(content, ".tar.gz")


def test_tarfile_gz_refused() -> None:
    """`tar czf` / tarfile's `w:gz` writes a real gzip as well."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.USTAR_FORMAT) as archive:
        archive.addfile(tarfile.TarInfo("a.py"), io.BytesIO(b""))

    with pytest.raises(PackageFormatError, match="real gzip file"):
        check_package(buffer.getvalue(), ".tar.gz")


@pytest.mark.parametrize(
    "content", [b"not compressed at all, just text", b"\x1f\x8b\x08\xe0" + bytes(20)]
)
def test_not_microfreezer_refused(content: bytes) -> None:
    """Bytes that are neither layout are refused with the zlib error."""
    with pytest.raises(PackageFormatError, match="not in the microfreezer layout"):
        check_package(content, ".tar.gz")


def test_microfreezer_truncated() -> None:
    """A zlib stream cut short is refused."""
    stream = zlib.compress(build_tar(APP), 9)

    with pytest.raises(PackageFormatError, match="truncated: its zlib stream does not end"):
        check_package(MICROFREEZER_HEADER + stream[:-20], ".tar.gz")


def test_microfreezer_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that inflates beyond what a device can hold is not inflated to the end."""
    monkeypatch.setattr(package_module, "MAX_INFLATED_SIZE", 4096)
    content = MICROFREEZER_HEADER + zlib.compress(build_tar(APP), 9)

    with pytest.raises(PackageFormatError, match="inflates to more than 4096 bytes"):
        check_package(content, ".tar.gz")


def test_microfreezer_with_bad_tar_inside() -> None:
    """The tar inside the stream obeys the same rules, and the message says where."""
    inner = build_tar([("a" * 120 + ".py", b"1")], tar_format=tarfile.PAX_FORMAT)
    content = MICROFREEZER_HEADER + zlib.compress(inner)

    with pytest.raises(
        PackageFormatError, match=r"PAX extended header.*\(inside the microfreezer stream\)$"
    ):
        check_package(content, ".tar.gz")


@pytest.mark.parametrize("file_type", [".zip", "tar", ".TAR", ""])
def test_other_types_refused(file_type: str) -> None:
    """Only `.tar` and `.tar.gz` are applied by the firmware."""
    with pytest.raises(
        PackageFormatError, match=re.escape("applies only .tar and .tar.gz packages")
    ):
        check_package(build_tar(APP), file_type)


def test_error_is_a_value_error() -> None:
    """One error type, a ValueError, for every refusal."""
    assert issubclass(PackageFormatError, ValueError)


@pytest.mark.parametrize("file_type", [".tar", ".tar.gz"])
def test_empty_package_refused(file_type: str) -> None:
    """An empty download is no package of either type."""
    with pytest.raises(PackageFormatError, match="the package is empty"):
        check_package(b"", file_type)


def test_empty_size_field_means_zero() -> None:
    """An all-NUL size field is an empty file."""
    content = header(b"a.py", size_field=bytes(12)) + END

    assert check_package(content, ".tar").members == ("a.py",)
