"""Helpers shared by the unit tests: device messages, the actions a user takes, what HA shows.

Fixtures live in `conftest.py`; these are plain functions the test modules import.
"""

from dataclasses import replace
from datetime import timedelta
import json
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.persistent_notification import DOMAIN as PN_DOMAIN
from homeassistant.const import CONF_EMAIL
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.const import (
    CONF_API_KEY,
    CONF_API_KEY_ID,
    CONF_CONSOLE_URL,
    DOMAIN,
)
from custom_components.insighio_ota.tracker import OtaTracker

from . import conftest
from .conftest import API, CONSOLE_URL, DATA_CHANNEL, DEVICE_ID, PACKAGE_ID

ENTITY_ID = "update.sensor_1_firmware"
OLD_ID = "0ld0ld00"
NOTIFICATION_ID = f"{DOMAIN}_{DEVICE_ID}_ota"
# The application commit the test package installs (its version.py names it, when it has one);
# a package that names no commit is verified by any /stat.
PACKAGE_COMMIT = "4f1c2a9"
BOOT_COMMIT = "1a2b3c4"


# -- what devices send, what we publish -------------------------------------------------------


def package_size() -> int:
    """Return the size of the package the mocked console serves."""
    return len(conftest.PACKAGE_BYTES)


def request_payload(file_id: str = PACKAGE_ID, file_type: str = ".tar") -> str:
    """Return the retained request as we publish it."""
    return json.dumps(
        [
            {"n": "e", "v": 0},
            {"n": "i", "vs": file_id},
            {"n": "t", "vs": file_type},
            {"n": "s", "v": package_size()},
        ],
        separators=(",", ":"),
    )


def report(code: int, file_id: str = PACKAGE_ID, reason: str | None = None) -> str:
    """Return a status report in the firmware's own key order."""
    records: list[dict[str, Any]] = [{"v": code, "n": "e"}, {"vs": file_id, "n": "i"}]
    if reason is not None:
        records.append({"vs": reason, "n": "m"})
    return json.dumps(records)


def telemetry_topic(device_id: str = DEVICE_ID) -> str:
    """Return a device's telemetry topic on the data channel."""
    return f"channels/{DATA_CHANNEL}/messages/{device_id}"


def telemetry_payload(**values: Any) -> str:
    """Return telemetry as the firmware sends it (base name and time on the first record)."""
    records: list[dict[str, Any]] = [
        {"n": "reset_cause", "bn": "240ac4542f45-", "bt": 1796315268, "v": 1},
        {"n": "uptime", "u": "ms", "v": 70},
    ]
    records.extend({"n": name, "v": value} for name, value in values.items())
    return json.dumps(records)


async def fire(hass: HomeAssistant, topic: str, payload: str, *, retain: bool = False) -> None:
    """Deliver an MQTT message to HA and let everything it causes run.

    As with a real broker, `retain` is set only on the replay that follows a subscription;
    HA's MQTT drops a second retained message on a topic, as a broker would never send one.
    """
    async_fire_mqtt_message(hass, topic, payload, retain=retain)
    await hass.async_block_till_done()


async def tick(hass: HomeAssistant, freezer: FrozenDateTimeFactory, delta: timedelta) -> None:
    """Move the clock forward and run the timers that became due."""
    freezer.tick(delta)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


# -- what a user does -------------------------------------------------------------------------


async def register(
    hass: HomeAssistant, version: str = "1.1.0", file_id: str = PACKAGE_ID, **data: Any
) -> None:
    """Register a package (the mocked console serves the same bytes for every file id)."""
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": file_id, "version": version, **data},
        blocking=True,
    )


async def install(
    hass: HomeAssistant, version: str | None = None, entity_id: str = ENTITY_ID
) -> None:
    """Press Install on a device's update entity (for a given version, when one is named)."""
    data: dict[str, Any] = {"entity_id": entity_id}
    if version is not None:
        data["version"] = version
    await hass.services.async_call("update", "install", data, blocking=True)
    await hass.async_block_till_done()


async def set_options(hass: HomeAssistant, entry: MockConfigEntry, **options: Any) -> None:
    """Change the entry's options; the tracker reads them at every use."""
    hass.config_entries.async_update_entry(entry, options={**entry.options, **options})
    await hass.async_block_till_done()


async def setup_entry_allowing_failure(hass: HomeAssistant, config_entry: MockConfigEntry) -> None:
    """Set an entry up without asserting that it loads."""
    config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()


async def restart(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Unload the entry and set it up again with the same storage, as an HA restart does."""
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


async def setup_second_entry(hass: HomeAssistant) -> MockConfigEntry:
    """Load a second console account, beside the one of `config_entry`; return its entry."""
    second = MockConfigEntry(
        domain=DOMAIN,
        title="other@example.test",
        unique_id=f"{CONSOLE_URL}|other@example.test",
        data={
            CONF_CONSOLE_URL: CONSOLE_URL,
            CONF_EMAIL: "other@example.test",
            CONF_API_KEY: "other-key",
            CONF_API_KEY_ID: "key-id-2",
        },
    )
    second.add_to_hass(hass)
    assert await hass.config_entries.async_setup(second.entry_id)
    await hass.async_block_till_done()
    return second


def serve_download(mock_console: AiohttpClientMocker, **response: Any) -> None:
    """Make the download endpoint answer `response` (the device list is not asked again)."""
    mock_console.clear_requests()
    mock_console.get(f"{API}/packages/download", **response)


# -- the tracker and what HA shows ------------------------------------------------------------


def tracker_of(entry: MockConfigEntry) -> OtaTracker:
    """Return the entry's tracker."""
    return entry.runtime_data.tracker


async def request_with_commit(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    sw_commit: str | None = PACKAGE_COMMIT,
    version: str = "1.1.0",
) -> None:
    """Request a registered package as if it named the application commit it installs."""
    package = entry.runtime_data.catalogue.by_version(version)
    assert package is not None
    await tracker_of(entry).async_request(DEVICE_ID, replace(package, sw_commit=sw_commit))
    await hass.async_block_till_done()


def attributes(hass: HomeAssistant) -> dict[str, Any]:
    """Return the update entity's attributes."""
    state = hass.states.get(ENTITY_ID)
    assert state is not None
    return dict(state.attributes)


def notification(hass: HomeAssistant) -> dict[str, Any] | None:
    """Return our notification for the device, if any."""
    return hass.data.get(PN_DOMAIN, {}).get(NOTIFICATION_ID)


def publishes(mqtt_mock: Any) -> list[tuple[Any, ...]]:
    """Return the (topic, payload, qos, retain) of every publish so far."""
    return [call.args for call in mqtt_mock.async_publish.call_args_list]


def clears(mqtt_mock: Any, topic: str) -> int:
    """Return how many empty retained publishes (clears) went to a topic."""
    return sum(1 for call in mqtt_mock.async_publish.call_args_list if call.args[:2] == (topic, ""))
