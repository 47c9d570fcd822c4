"""The register_package action: verify a console package by downloading it, then store it."""

import asyncio
import gzip
import hashlib
import io
import tarfile
from typing import Any
from unittest.mock import patch

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
import probatio
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.console import ConsoleClient, PackageDownload
from custom_components.insighio_ota.const import (
    DOMAIN,
)

from .conftest import (
    APP_FILES,
    CONTROL_CHANNEL,
    DEVICE_ID,
    DEVICE_KEY,
    PACKAGE_BYTES,
    PACKAGE_ID,
    microfreezer_package,
    ustar_package,
)
from .helpers import serve_download, setup_second_entry

ENTITY_ID = "update.sensor_1_firmware"
SHA256 = hashlib.sha256(PACKAGE_BYTES).hexdigest()


async def register(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    """Call register_package and return its response."""
    return await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": PACKAGE_ID, "version": "1.1.0", **data},
        blocking=True,
        return_response=True,
    )


def stored_packages(hass_storage: dict[str, Any], entry: MockConfigEntry) -> list[dict[str, Any]]:
    """Return the packages as saved in HA's storage."""
    key = f"{DOMAIN}.{entry.entry_id}.packages"
    return hass_storage[key]["data"]["packages"] if key in hass_storage else []


async def test_register_stores_size_and_sha256(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    hass_storage: dict[str, Any],
) -> None:
    """The package is downloaded as the device would, measured, stored and offered."""
    response = await register(
        hass, file_id=" 4f1c2a9e ", version=" 1.1.0 ", release_notes="# Fixes\nBetter radio."
    )

    assert response == {
        "file_id": PACKAGE_ID,
        "file_type": ".tar",
        "version": "1.1.0",
        "size": len(PACKAGE_BYTES),
        "sha256": SHA256,
        "release_notes": "# Fixes\nBetter radio.",
        "registered_at": response["registered_at"],
        "hardware": [],
        "sw_commit": None,
        "position": 1,
    }
    # Downloaded with the first device's own credentials, as that device would.
    download = next(c for c in mock_console.mock_calls if "/packages/download" in str(c[1]))
    assert dict(download[1].query) == {
        "fuid": PACKAGE_ID,
        "did": DEVICE_ID,
        "dk": DEVICE_KEY,
        "cid": CONTROL_CHANNEL,
    }
    await hass.async_block_till_done()
    [stored] = stored_packages(hass_storage, setup_integration)
    assert stored["file_id"] == PACKAGE_ID
    assert stored["file_type"] == ".tar"
    assert stored["size"] == 3987
    assert stored["sha256"] == SHA256
    assert stored["version"] == "1.1.0"
    assert stored["release_notes"] == "# Fixes\nBetter radio."
    state = hass.states.get(ENTITY_ID)
    assert state.attributes["latest_version"] == "1.1.0"
    assert state.attributes["release_summary"] == "# Fixes"


async def test_register_tar_gz(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    hass_storage: dict[str, Any],
) -> None:
    """A .tar.gz in the microfreezer layout is accepted as given."""
    serve_download(mock_console, content=microfreezer_package(APP_FILES))
    response = await register(hass, file_type=".tar.gz")

    assert response["file_type"] == ".tar.gz"
    await hass.async_block_till_done()
    assert stored_packages(hass_storage, setup_integration)[0]["file_type"] == ".tar.gz"


async def test_registered_packages_survive_restart(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """After a reload the catalogue comes back from storage, in the same order."""
    await register(hass, file_id="aaaa0001", version="2.0")
    await register(hass, file_id="aaaa0002", version="10.0")

    assert await hass.config_entries.async_reload(setup_integration.entry_id)
    await hass.async_block_till_done()

    assert hass.states.get(ENTITY_ID).attributes["latest_version"] == "10.0"
    assert [p["version"] for p in stored_packages(hass_storage, setup_integration)] == [
        "2.0",
        "10.0",
    ]


@pytest.mark.parametrize(
    ("response", "error", "translation_key"),
    [
        ({"status": 404}, ServiceValidationError, "package_not_found"),
        ({"status": 403}, HomeAssistantError, "download_refused"),
        ({"status": 401}, HomeAssistantError, "download_refused"),
        ({"status": 500}, HomeAssistantError, "console_unavailable"),
        ({"exc": aiohttp.ClientConnectionError()}, HomeAssistantError, "console_unavailable"),
        ({"exc": TimeoutError()}, HomeAssistantError, "console_unavailable"),
        ({"content": b""}, HomeAssistantError, "console_unavailable"),
    ],
)
async def test_download_failures_store_nothing(
    hass: HomeAssistant,
    *,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    hass_storage: dict[str, Any],
    response: dict[str, Any],
    error: type[HomeAssistantError],
    translation_key: str,
) -> None:
    """A package the console will not hand out is refused with a translated reason."""
    serve_download(mock_console, **response)

    with pytest.raises(error) as exc_info:
        await register(hass)

    assert exc_info.value.translation_domain == DOMAIN
    assert exc_info.value.translation_key == translation_key
    if translation_key == "package_not_found":
        assert str(exc_info.value).startswith(
            f"The console has no package with file id {PACKAGE_ID}; nothing was stored"
        )
    # The device key in the download URL never reaches the user or the logs.
    assert DEVICE_KEY not in str(exc_info.value)
    await hass.async_block_till_done()
    assert stored_packages(hass_storage, setup_integration) == []
    assert hass.states.get(ENTITY_ID).attributes["latest_version"] is None


@pytest.mark.parametrize("file_type", ["tar", ".", ""])
async def test_invalid_type_refused_before_download(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    file_type: str,
) -> None:
    """A type the firmware cannot use (no leading dot) is refused without downloading."""
    mock_console.clear_requests()

    with pytest.raises(ServiceValidationError) as exc_info:
        await register(hass, file_type=file_type)

    assert exc_info.value.translation_key == "invalid_package"
    assert mock_console.call_count == 0


async def test_version_taken_by_other_file(
    hass: HomeAssistant, setup_integration: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """A label already given to another package is refused: labels name one package."""
    await register(hass, file_id="aaaa0001", version="1.0")

    with pytest.raises(ServiceValidationError) as exc_info:
        await register(hass, file_id="bbbb0002", version="1.0")

    assert exc_info.value.translation_key == "version_taken"
    assert exc_info.value.translation_placeholders == {"version": "1.0", "file_id": "aaaa0001"}
    await hass.async_block_till_done()
    assert [p["file_id"] for p in stored_packages(hass_storage, setup_integration)] == ["aaaa0001"]


async def test_registering_a_file_id_again_is_refused(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    hass_storage: dict[str, Any],
) -> None:
    """A second registration would drop the package's hardware and commit: it is refused.

    The error names the label the package has and points to update_package; nothing is
    downloaded and the stored package is unchanged.
    """
    await register(hass, file_id=PACKAGE_ID, version="1.0", hardware=["esp32s3"])
    await hass.async_block_till_done()
    before = stored_packages(hass_storage, setup_integration)
    downloads = mock_console.call_count

    with pytest.raises(ServiceValidationError) as exc_info:
        await register(hass, file_id=PACKAGE_ID, version="1.0-fixed", release_notes="Renamed")

    assert exc_info.value.translation_key == "package_registered"
    assert exc_info.value.translation_placeholders == {"file_id": PACKAGE_ID, "version": "1.0"}
    assert "update_package" in str(exc_info.value)
    assert mock_console.call_count == downloads
    await hass.async_block_till_done()
    assert stored_packages(hass_storage, setup_integration) == before
    assert before[0]["hardware"] == ["esp32s3"]


@pytest.mark.parametrize("console_devices", [[]])
async def test_no_device_to_verify(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mock_console: AiohttpClientMocker
) -> None:
    """Without a device there are no credentials to download the package with."""
    mock_console.clear_requests()

    with pytest.raises(ServiceValidationError) as exc_info:
        await register(hass)

    assert exc_info.value.translation_key == "no_device_to_verify"
    assert mock_console.call_count == 0


@pytest.mark.parametrize(
    "data", [{"version": ""}, {"version": "   "}, {"file_id": ""}, {"version": "v" * 65}]
)
async def test_schema_refuses_empty_fields(
    hass: HomeAssistant, setup_integration: MockConfigEntry, data: dict[str, Any]
) -> None:
    """Empty ids and labels, or labels too long to show, are refused by the schema."""
    with pytest.raises(probatio.Invalid, match="length of value"):
        await register(hass, **data)


async def test_no_loaded_entry(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mock_console: AiohttpClientMocker
) -> None:
    """With the entry unloaded there is nowhere to register the package."""
    await hass.config_entries.async_unload(setup_integration.entry_id)
    await hass.async_block_till_done()
    mock_console.clear_requests()

    with pytest.raises(ServiceValidationError) as exc_info:
        await register(hass)

    assert exc_info.value.translation_key == "entry_not_loaded"
    assert mock_console.call_count == 0


async def test_unknown_config_entry_id(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A config_entry_id that names no loaded entry is refused."""
    with pytest.raises(ServiceValidationError) as exc_info:
        await register(hass, config_entry_id="not-an-entry")

    assert exc_info.value.translation_key == "entry_not_loaded"


async def test_two_entries_need_config_entry_id(
    hass: HomeAssistant, setup_integration: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """With two accounts loaded the action must say which one; then it stores only there."""
    second = await setup_second_entry(hass)

    with pytest.raises(ServiceValidationError) as exc_info:
        await register(hass)
    assert exc_info.value.translation_key == "entry_ambiguous"

    response = await register(hass, config_entry_id=second.entry_id)
    assert response["size"] == 3987
    await hass.async_block_till_done()
    assert len(stored_packages(hass_storage, second)) == 1
    assert stored_packages(hass_storage, setup_integration) == []

    await hass.config_entries.async_unload(second.entry_id)
    await hass.async_block_till_done()


async def test_concurrent_registrations_keep_labels_unique(
    hass: HomeAssistant, setup_integration: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """Two registrations racing for one label: one wins, the other is refused after download."""
    both_downloading = asyncio.Barrier(2)

    async def slow_download(*_args: Any, **_kwargs: Any) -> PackageDownload:
        # Both calls have passed the early label check before either stores its package.
        await both_downloading.wait()
        return PackageDownload(size=len(PACKAGE_BYTES), sha256=SHA256, content=PACKAGE_BYTES)

    with patch.object(ConsoleClient, "download_package", side_effect=slow_download):
        results = await asyncio.gather(
            register(hass, file_id="aaaa0001", version="1.0"),
            register(hass, file_id="bbbb0002", version="1.0"),
            return_exceptions=True,
        )

    refused = [r for r in results if isinstance(r, ServiceValidationError)]
    assert len(refused) == 1
    assert refused[0].translation_key == "version_taken"
    await hass.async_block_till_done()
    assert len(stored_packages(hass_storage, setup_integration)) == 1


# --- the format check ------------------------------------------------------------------------


def pax_package() -> bytes:
    """Return a tar in Python's default PAX format, which writes junk files on the device."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("main.py")
        info.pax_headers = {"comment": "made on a desktop"}
        archive.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("file_type", "content", "message"),
    [
        (".tar", b"x" * 3987, "not a tar archive: its first header has a wrong checksum"),
        (".tar", pax_package(), "is a PAX extended header"),
        (
            ".tar.gz",
            gzip.compress(ustar_package(APP_FILES)),
            "the .tar.gz is a real gzip file; the firmware needs the microfreezer layout",
        ),
        (".tar.gz", PACKAGE_BYTES, "the .tar.gz is not in the microfreezer layout"),
        (".zip", PACKAGE_BYTES, "applies only .tar and .tar.gz packages"),
    ],
)
async def test_format_refused_stores_nothing(
    hass: HomeAssistant,
    *,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    hass_storage: dict[str, Any],
    file_type: str,
    content: bytes,
    message: str,
) -> None:
    """A package the firmware cannot apply is refused, saying exactly why; nothing is stored."""
    serve_download(mock_console, content=content)

    with pytest.raises(ServiceValidationError) as exc_info:
        await register(hass, file_type=file_type)

    assert exc_info.value.translation_key == "package_format"
    assert exc_info.value.translation_placeholders["file_id"] == PACKAGE_ID
    assert message in exc_info.value.translation_placeholders["error"]
    assert str(exc_info.value).startswith(f"Package {PACKAGE_ID} cannot be applied by the firmware")
    assert message in str(exc_info.value)
    await hass.async_block_till_done()
    assert stored_packages(hass_storage, setup_integration) == []
    assert hass.states.get(ENTITY_ID).attributes["latest_version"] is None


async def test_sw_commit_from_version_py(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mock_console: AiohttpClientMocker
) -> None:
    """The commit the package's version.py names is recorded, unless the user gives one."""
    serve_download(
        mock_console,
        content=ustar_package({**APP_FILES, "version.py": b'sw_commit = "4f1c2a9"\n'}),
    )

    assert (await register(hass, file_id="aaaa0001", version="1.0"))["sw_commit"] == "4f1c2a9"
    response = await register(hass, file_id="aaaa0002", version="2.0", sw_commit=" beef123 ")
    assert response["sw_commit"] == "beef123"
    response = await register(hass, file_id="aaaa0003", version="3.0", sw_commit="")
    assert response["sw_commit"] == "4f1c2a9"


async def test_register_hardware(
    hass: HomeAssistant, setup_integration: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """Hardware families are stored; a single family may be given as a string."""
    response = await register(hass, hardware=["esp32s3", "esp32"])
    assert response["hardware"] == ["esp32s3", "esp32"]

    response = await register(hass, file_id="aaaa0002", version="2.0", hardware="esp8266")
    assert response["hardware"] == ["esp8266"]
    assert response["position"] == 2
    await hass.async_block_till_done()
    assert [p["hardware"] for p in stored_packages(hass_storage, setup_integration)] == [
        ["esp32s3", "esp32"],
        ["esp8266"],
    ]


@pytest.mark.parametrize(
    "data", [{"hardware": ["esp33"]}, {"hardware": [1]}, {"sw_commit": "c" * 65}]
)
async def test_schema_refuses_bad_hardware_and_commit(
    hass: HomeAssistant, setup_integration: MockConfigEntry, data: dict[str, Any]
) -> None:
    """Unknown hardware families and overlong commits are refused by the schema."""
    with pytest.raises(probatio.Invalid):
        await register(hass, **data)


# --- update, remove, list --------------------------------------------------------------------


async def call(hass: HomeAssistant, action: str, **data: Any) -> dict[str, Any] | None:
    """Call one of the package actions, with a response when it gives one."""
    return await hass.services.async_call(
        DOMAIN, action, data, blocking=True, return_response=action != "remove_package"
    )


async def test_update_package(
    hass: HomeAssistant, setup_integration: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """Label, notes, hardware, commit and position change; the entity follows."""
    await register(
        hass, file_id="aaaa0001", version="1.0", release_notes="Old", sw_commit="abc1234"
    )
    await register(hass, file_id="aaaa0002", version="2.0")

    response = await call(
        hass,
        "update_package",
        file_id="aaaa0001",
        version="1.0.1",
        release_notes="",
        hardware=[],
        sw_commit="",
        position=2,
    )

    assert response is not None
    assert response["version"] == "1.0.1"
    assert response["release_notes"] is None
    assert response["sw_commit"] is None
    assert response["position"] == 2
    await hass.async_block_till_done()
    assert [p["version"] for p in stored_packages(hass_storage, setup_integration)] == [
        "2.0",
        "1.0.1",
    ]
    assert hass.states.get(ENTITY_ID).attributes["latest_version"] == "1.0.1"

    # Only what is given changes.
    response = await call(hass, "update_package", file_id="aaaa0001", hardware=["esp32"])
    assert response is not None
    assert (response["version"], response["hardware"]) == ("1.0.1", ["esp32"])
    # A package for other hardware is no longer this (unknown hardware) device's latest.
    assert hass.states.get(ENTITY_ID).attributes["latest_version"] == "2.0"


async def test_update_package_refusals(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """An unknown file id or a label of another package is refused, translated."""
    await register(hass, file_id="aaaa0001", version="1.0")
    await register(hass, file_id="aaaa0002", version="2.0")

    with pytest.raises(ServiceValidationError) as exc_info:
        await call(hass, "update_package", file_id="ffff0000", version="3.0")
    assert exc_info.value.translation_key == "unknown_package"
    assert str(exc_info.value) == "No registered package has the file id ffff0000"

    with pytest.raises(ServiceValidationError) as exc_info:
        await call(hass, "update_package", file_id="aaaa0001", version="2.0")
    assert exc_info.value.translation_key == "version_taken"
    assert exc_info.value.translation_placeholders == {"version": "2.0", "file_id": "aaaa0002"}

    with pytest.raises(probatio.Invalid):
        await call(hass, "update_package", file_id="aaaa0001", position=0)


async def test_remove_package(
    hass: HomeAssistant, setup_integration: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """Removing forgets the package; the latest version falls back to the one before."""
    await register(hass, file_id="aaaa0001", version="1.0")
    await register(hass, file_id="aaaa0002", version="2.0")

    assert await call(hass, "remove_package", file_id="aaaa0002") is None

    await hass.async_block_till_done()
    assert [p["file_id"] for p in stored_packages(hass_storage, setup_integration)] == ["aaaa0001"]
    assert hass.states.get(ENTITY_ID).attributes["latest_version"] == "1.0"
    with pytest.raises(ServiceValidationError) as exc_info:
        await call(hass, "remove_package", file_id="aaaa0002")
    assert exc_info.value.translation_key == "unknown_package"
    assert exc_info.value.translation_placeholders == {"file_id": "aaaa0002"}


async def test_list_packages(hass: HomeAssistant, setup_integration: MockConfigEntry) -> None:
    """The packages come in order, with their positions; the action only responds."""
    assert await call(hass, "list_packages") == {"packages": []}
    await register(hass, file_id="aaaa0001", version="2.0", hardware=["esp32"])
    await register(hass, file_id="aaaa0002", version="10.0")
    await call(hass, "update_package", file_id="aaaa0002", position=1)

    response = await call(hass, "list_packages", config_entry_id=setup_integration.entry_id)

    assert response is not None
    assert [(p["version"], p["position"], p["hardware"]) for p in response["packages"]] == [
        ("10.0", 1, []),
        ("2.0", 2, ["esp32"]),
    ]
    assert response["packages"][0]["size"] == len(PACKAGE_BYTES)
    assert response["packages"][0]["sha256"] == SHA256
    with pytest.raises(ServiceValidationError, match="requires responses"):
        await hass.services.async_call(DOMAIN, "list_packages", {}, blocking=True)
