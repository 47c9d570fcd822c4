"""Fixtures shared by the unit tests: a console account with devices, and a loaded entry."""

from collections.abc import AsyncGenerator
import io
import json
import tarfile
from typing import Any
from unittest.mock import MagicMock
import zlib

from homeassistant.const import CONF_EMAIL
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

# Imported first so that our `custom_components` package wins over the one the test plugin
# ships, which would otherwise shadow it.
import custom_components.insighio_ota  # noqa: F401
from custom_components.insighio_ota.const import (
    CONF_API_KEY,
    CONF_API_KEY_ID,
    CONF_CONSOLE_URL,
    DOMAIN,
)

CONSOLE_URL = "https://console.example.test"
API = f"{CONSOLE_URL}/mf-rproxy"
DATA_CHANNEL = "d0d0d0d0-0000-4000-8000-000000000001"
CONTROL_CHANNEL = "c0c0c0c0-0000-4000-8000-000000000002"
DEVICE_ID = "11111111-1111-4111-8111-111111111111"
DEVICE_KEY = "a7a7a7a7-dead-4bee-8f00-0000000000ff"
OTHER_DEVICE_ID = "22222222-2222-4222-8222-222222222222"
API_KEY = "api-key-value-secret"
PACKAGE_ID = "4f1c2a9e"
# PACKAGE_BYTES, the package the console serves by default, is built at the end of this module.


def console_device(device_id: str, name: str, key: str = DEVICE_KEY) -> dict[str, Any]:
    """Return a device as the console's device list gives it."""
    return {
        "id": device_id,
        "name": name,
        "key": key,
        "metadata": {"dataChannel": DATA_CHANNEL, "controlChannel": CONTROL_CHANNEL},
    }


def ota_topic(device_id: str = DEVICE_ID) -> str:
    """Return a device's /ota topic."""
    return f"channels/{CONTROL_CHANNEL}/messages/{device_id}/ota"


def stat_topic(device_id: str = DEVICE_ID) -> str:
    """Return a device's /stat topic."""
    return f"channels/{CONTROL_CHANNEL}/messages/{device_id}/stat"


def stat_payload(sw_commit: str = "1a2b3c4", **extra: Any) -> str:
    """Return a /stat payload in the firmware's record order."""
    records: list[dict[str, Any]] = [
        {"vs": "master", "n": "sw_branch"},
        {"vs": sw_commit, "n": "sw_commit"},
        {"vs": "esp32s3", "n": "hw_version"},
        {"v": 1, "n": "fw_v_major"},
        {"v": 26, "n": "fw_v_minor"},
        {"v": 0, "n": "fw_v_patch"},
        {"v": 900000, "n": "free_flash"},
        {"vs": "240ac4542f45", "n": "serial"},
    ]
    records.extend({"vs" if isinstance(v, str) else "v": v, "n": n} for n, v in extra.items())
    return json.dumps(records)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let HA load our integration from `custom_components`."""


@pytest.fixture
def console_devices() -> list[dict[str, Any]]:
    """Return the devices the console lists; tests may change the list."""
    return [console_device(DEVICE_ID, "Sensor 1")]


@pytest.fixture
def mock_console(
    aioclient_mock: AiohttpClientMocker, console_devices: list[dict[str, Any]]
) -> AiohttpClientMocker:
    """Answer the console's REST API."""
    aioclient_mock.post(f"{API}/tokens", status=201, json={"token": "login-token"})
    aioclient_mock.post(
        f"{API}/keys",
        status=201,
        json={
            "id": "key-id-1",
            "name": "Home Assistant insighio_ota",
            "value": API_KEY,
            "issued_at": "2026-12-03T10:00:00Z",
            "expires_at": "2036-12-01T10:00:00Z",
        },
    )
    aioclient_mock.get(f"{API}/device/list", json=console_devices)
    aioclient_mock.get(f"{API}/packages/download", content=PACKAGE_BYTES)
    return aioclient_mock


@pytest.fixture
def config_entry() -> MockConfigEntry:
    """Return a console account entry."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="user@example.test",
        unique_id=f"{CONSOLE_URL}|user@example.test",
        data={
            CONF_CONSOLE_URL: CONSOLE_URL,
            CONF_EMAIL: "user@example.test",
            CONF_API_KEY: API_KEY,
            CONF_API_KEY_ID: "key-id-1",
        },
    )


@pytest.fixture
async def setup_integration(
    hass: HomeAssistant,
    mqtt_mock: Any,
    mqtt_client_mock: Any,
    mock_console: AiohttpClientMocker,
    config_entry: MockConfigEntry,
) -> AsyncGenerator[MockConfigEntry]:
    """Load the integration with HA's MQTT mocked; unload everything afterwards."""
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    yield config_entry
    # Unload ours as HA does when it stops, then close the mocked MQTT socket: HA's MQTT client
    # stops its periodic timer only then, and the test harness flags a timer left running.
    await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, MagicMock(fileno=lambda: -1))


def ustar_package(files: dict[str, bytes | None], size: int | None = None) -> bytes:
    """Return a plain ustar archive (a package the firmware applies), of `size` bytes if given.

    A value of None makes a directory entry. Python writes the end blocks and then zero padding
    to a 10 KiB record; `size` cuts or extends that padding, which stays a valid archive.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_735_689_600
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(data))
    content = buffer.getvalue().rstrip(b"\0")
    # Keep the last member's padding and the two end blocks, then pad (or not) to `size`.
    content = content + bytes(-len(content) % 512 + 1024)
    if size is not None:
        assert size >= len(content), "the files do not fit in that size"
        content += bytes(size - len(content))
    return content


def microfreezer_package(files: dict[str, bytes | None]) -> bytes:
    """Return the only .tar.gz the firmware reads: 8 fake gzip bytes, then a zlib stream."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + zlib.compress(ustar_package(files), 9)


APP_FILES: dict[str, bytes | None] = {
    "apps": None,
    "apps/demo_console": None,
    "apps/demo_console/scenario.py": b"def execute():\n    return 1\n",
}
# No version.py: which commit a package installs is up to each test. 3987 bytes, the size every
# request in the tests carries.
PACKAGE_BYTES = ustar_package(APP_FILES, size=3987)
