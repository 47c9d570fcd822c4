"""The package catalogue: order, hardware compatibility, commits, edits and storage."""

from typing import Any

from homeassistant.core import HomeAssistant
import pytest

from custom_components.insighio_ota.catalogue import (
    STORAGE_VERSION,
    Package,
    PackageCatalogue,
    PackageRegisteredError,
    UnknownPackageError,
    VersionTakenError,
    normalize_hardware,
    same_commit,
)
from custom_components.insighio_ota.const import DOMAIN

ENTRY_ID = "entry-1"
KEY = f"{DOMAIN}.{ENTRY_ID}.packages"


async def add(catalogue: PackageCatalogue, file_id: str, version: str, **kwargs: Any) -> Package:
    """Register a package with made-up size and hash."""
    return await catalogue.async_add(
        file_id=file_id,
        file_type=".tar",
        size=1024,
        sha256="0" * 64,
        version=version,
        release_notes=kwargs.pop("release_notes", None),
        **kwargs,
    )


@pytest.fixture
async def catalogue(hass: HomeAssistant) -> PackageCatalogue:
    """Return an empty, loaded catalogue."""
    catalogue = PackageCatalogue(hass, ENTRY_ID)
    await catalogue.async_load()
    return catalogue


async def reloaded(hass: HomeAssistant) -> PackageCatalogue:
    """Return a new catalogue read back from storage."""
    catalogue = PackageCatalogue(hass, ENTRY_ID)
    await catalogue.async_load()
    return catalogue


async def test_empty(catalogue: PackageCatalogue) -> None:
    """Without packages nothing is latest, for any hardware."""
    assert catalogue.packages == []
    assert catalogue.latest is None
    assert catalogue.latest_for("esp32") is None
    assert catalogue.latest_for(None) is None
    assert catalogue.by_sw_commit("abc1234") is None


async def test_registration_order_is_the_order(
    hass: HomeAssistant, catalogue: PackageCatalogue, hass_storage: dict[str, Any]
) -> None:
    """Order follows registration, never the labels; it survives a reload."""
    await add(catalogue, "aaaa0001", "2.0")
    await add(catalogue, "aaaa0002", "10.0")
    await add(catalogue, "aaaa0003", "1.5")

    assert [p.version for p in catalogue.packages] == ["2.0", "10.0", "1.5"]
    assert catalogue.latest is not None
    assert catalogue.latest.version == "1.5"
    assert catalogue.order_of("10.0") == 1
    assert catalogue.order_of("nope") is None
    assert catalogue.position_of("aaaa0003") == 2
    assert hass_storage[KEY]["version"] == STORAGE_VERSION
    assert [p.version for p in (await reloaded(hass)).packages] == ["2.0", "10.0", "1.5"]


async def test_registering_a_file_id_again_is_refused(catalogue: PackageCatalogue) -> None:
    """A second registration of a file id would drop its hardware and commit: it is refused."""
    await add(catalogue, "aaaa0001", "1.0", hardware=["esp32"], sw_commit="abc1234")
    await add(catalogue, "aaaa0002", "2.0")

    with pytest.raises(PackageRegisteredError) as registered:
        await add(catalogue, "aaaa0001", "1.0b")
    assert (registered.value.file_id, registered.value.version) == ("aaaa0001", "1.0")
    first = catalogue.packages[0]
    assert (first.version, first.hardware, first.sw_commit) == ("1.0", ("esp32",), "abc1234")
    assert len(catalogue.packages) == 2

    with pytest.raises(VersionTakenError) as exc_info:
        await add(catalogue, "aaaa0003", "2.0")
    assert exc_info.value.file_id == "aaaa0002"
    assert exc_info.value.version == "2.0"


async def test_hardware_compatibility(catalogue: PackageCatalogue) -> None:
    """A device sees the newest package for its family or for all hardware."""
    generic = await add(catalogue, "aaaa0001", "1.0")
    s3 = await add(catalogue, "aaaa0002", "1.1-s3", hardware=["ESP32S3 ", "esp32s3", " "])
    wroom = await add(catalogue, "aaaa0003", "1.1-wroom", hardware=["esp32wroom", "esp32"])

    assert s3.hardware == ("esp32s3",)
    assert wroom.hardware == ("esp32wroom", "esp32")
    assert catalogue.latest == wroom
    assert catalogue.latest_for("esp32s3") == s3
    assert catalogue.latest_for("ESP32S3") == s3
    assert catalogue.latest_for("esp32") == wroom
    assert catalogue.latest_for("esp8266") == generic
    # Unknown hardware sees only packages for all hardware.
    assert catalogue.latest_for(None) == generic
    assert catalogue.compatible(generic, None)
    assert not catalogue.compatible(s3, None)
    assert not catalogue.compatible(s3, "esp32")
    assert catalogue.compatible(s3, "esp32s3")


async def test_only_hardware_specific_packages(catalogue: PackageCatalogue) -> None:
    """With no package for all hardware, other families have nothing."""
    await add(catalogue, "aaaa0001", "1.0", hardware=["esp8266"])

    assert catalogue.latest_for("esp32") is None
    assert catalogue.latest_for(None) is None


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("abc1234", "abc1234", True),
        ("ABC1234", "abc1234", True),
        ("abc1234", "abc1234def5678", True),
        ("abc1234def5678", " abc1234 ", True),
        ("abc123", "abc1234", False),
        ("abc1235", "abc1234def", False),
        ("", "", False),
        ("abc1234", " ", False),
    ],
)
def test_same_commit(first: str, second: str, *, same: bool) -> None:
    """Commits match exactly or by an abbreviation of at least 7 characters."""
    assert same_commit(first, second) is same


async def test_by_sw_commit(catalogue: PackageCatalogue) -> None:
    """A /stat commit maps to the newest package that installs it."""
    await add(catalogue, "aaaa0001", "1.0", sw_commit="1a2b3c4d5e6f")
    await add(catalogue, "aaaa0002", "1.1")
    second = await add(catalogue, "aaaa0003", "1.0-s3", sw_commit="1a2b3c4", hardware=["esp32s3"])

    assert catalogue.by_sw_commit("1a2b3c4d5e") == second
    assert catalogue.by_sw_commit("ffffffff") is None
    assert catalogue.by_sw_commit(None) is None
    assert catalogue.by_sw_commit("") is None


def test_normalize_hardware() -> None:
    """Blank entries and repeats go, case folds, order stays."""
    assert normalize_hardware([" Other", "esp32", "other", ""]) == ("other", "esp32")


async def test_update_fields(
    hass: HomeAssistant, catalogue: PackageCatalogue, hass_storage: dict[str, Any]
) -> None:
    """Label, notes, hardware and commit change in place and are stored."""
    await add(catalogue, "aaaa0001", "1.0", release_notes="old", sw_commit="abc1234")
    await add(catalogue, "aaaa0002", "2.0", hardware=["esp32"])
    calls: list[None] = []
    catalogue.async_add_listener(lambda: calls.append(None))

    updated = await catalogue.async_update(
        "aaaa0001", version="1.0.1", release_notes="  ", hardware=["esp32s2"], sw_commit=""
    )
    cleared = await catalogue.async_update("aaaa0002", hardware=None, release_notes="# New")

    assert (updated.version, updated.release_notes, updated.hardware, updated.sw_commit) == (
        "1.0.1",
        None,
        ("esp32s2",),
        None,
    )
    assert cleared.hardware == ()
    assert cleared.release_notes == "# New"
    assert len(calls) == 2
    assert [p.version for p in (await reloaded(hass)).packages] == ["1.0.1", "2.0"]
    assert hass_storage[KEY]["data"]["packages"][0]["hardware"] == ["esp32s2"]


async def test_update_refusals(catalogue: PackageCatalogue) -> None:
    """Unknown ids, taken labels and unknown fields are refused; nothing changes."""
    await add(catalogue, "aaaa0001", "1.0")
    await add(catalogue, "aaaa0002", "2.0")

    with pytest.raises(UnknownPackageError) as exc_info:
        await catalogue.async_update("ffff0000", version="3.0")
    assert exc_info.value.file_id == "ffff0000"
    with pytest.raises(VersionTakenError):
        await catalogue.async_update("aaaa0001", version="2.0")
    with pytest.raises(TypeError, match="cannot change size"):
        await catalogue.async_update("aaaa0001", size=1)
    # Keeping its own label is fine.
    assert (await catalogue.async_update("aaaa0001", version="1.0")).version == "1.0"
    assert [p.version for p in catalogue.packages] == ["1.0", "2.0"]


async def test_update_position(catalogue: PackageCatalogue) -> None:
    """An update may move a package, which changes what is latest."""
    await add(catalogue, "aaaa0001", "1.0")
    await add(catalogue, "aaaa0002", "2.0")

    await catalogue.async_update("aaaa0001", position=5)

    assert [p.version for p in catalogue.packages] == ["2.0", "1.0"]
    assert catalogue.latest is not None
    assert catalogue.latest.version == "1.0"


async def test_move(hass: HomeAssistant, catalogue: PackageCatalogue) -> None:
    """Moving reorders explicitly, clamped to the list; the order is stored."""
    for number in range(1, 4):
        await add(catalogue, f"aaaa000{number}", f"{number}.0")

    await catalogue.async_move("aaaa0003", 0)
    assert [p.version for p in catalogue.packages] == ["3.0", "1.0", "2.0"]
    await catalogue.async_move("aaaa0003", -4)
    assert [p.version for p in catalogue.packages] == ["3.0", "1.0", "2.0"]
    moved = await catalogue.async_move("aaaa0001", 99)
    assert moved.version == "1.0"
    assert [p.version for p in (await reloaded(hass)).packages] == ["3.0", "2.0", "1.0"]
    with pytest.raises(UnknownPackageError):
        await catalogue.async_move("ffff0000", 0)
    with pytest.raises(UnknownPackageError):
        catalogue.position_of("ffff0000")


async def test_remove(hass: HomeAssistant, catalogue: PackageCatalogue) -> None:
    """Removing forgets the package and tells the listeners until they stop listening."""
    await add(catalogue, "aaaa0001", "1.0")
    await add(catalogue, "aaaa0002", "2.0")
    calls: list[None] = []
    unsubscribe = catalogue.async_add_listener(lambda: calls.append(None))

    removed = await catalogue.async_remove("aaaa0002")

    assert removed.version == "2.0"
    assert catalogue.latest is not None
    assert catalogue.latest.version == "1.0"
    assert calls == [None]
    unsubscribe()
    await catalogue.async_remove("aaaa0001")
    assert calls == [None]
    assert (await reloaded(hass)).packages == []
    with pytest.raises(UnknownPackageError):
        await catalogue.async_remove("aaaa0001")


async def test_version_1_storage_is_migrated(
    hass: HomeAssistant, hass_storage: dict[str, Any]
) -> None:
    """Records saved before hardware and commits existed load with their defaults."""
    hass_storage[KEY] = {
        "version": 1,
        "minor_version": 1,
        "key": KEY,
        "data": {
            "packages": [
                {
                    "file_id": "aaaa0001",
                    "file_type": ".tar",
                    "size": 3987,
                    "sha256": "ab" * 32,
                    "version": "1.0",
                    "release_notes": None,
                    "registered_at": "2026-12-01T10:00:00+00:00",
                }
            ]
        },
    }

    catalogue = await reloaded(hass)

    [package] = catalogue.packages
    assert package.hardware == ()
    assert package.sw_commit is None
    assert package.size == 3987
    assert catalogue.latest_for("esp32") == package


async def test_tolerant_load(hass: HomeAssistant, hass_storage: dict[str, Any]) -> None:
    """Unknown fields (from a newer minor version) are ignored, missing optional ones defaulted."""
    hass_storage[KEY] = {
        "version": STORAGE_VERSION,
        "minor_version": 1,
        "key": KEY,
        "data": {
            "packages": [
                {
                    "file_id": "aaaa0001",
                    "file_type": ".tar.gz",
                    "size": 10,
                    "sha256": "cd" * 32,
                    "version": "1.0",
                    "hardware": ["esp32"],
                    "sw_commit": "",
                    "future_field": 1,
                }
            ]
        },
    }

    [package] = (await reloaded(hass)).packages

    assert package == Package(
        file_id="aaaa0001",
        file_type=".tar.gz",
        size=10,
        sha256="cd" * 32,
        version="1.0",
        release_notes=None,
        registered_at="",
        hardware=("esp32",),
        sw_commit=None,
    )
    assert package.as_dict()["hardware"] == ["esp32"]
