"""The OTA status sensor of a device: idle, then the state of its last job, with its history."""

from datetime import timedelta
import io
import tarfile
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.sensor import ATTR_OPTIONS, SensorDeviceClass
from homeassistant.const import ATTR_DEVICE_CLASS
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.const import DEVICE_LIST_INTERVAL

from .conftest import (
    API,
    DEVICE_ID,
    OTHER_DEVICE_ID,
    PACKAGE_ID,
    console_device,
    ota_topic,
    stat_payload,
    stat_topic,
)
from .helpers import fire, install, register, report

SENSOR_ID = "sensor.sensor_1_ota_status"
EVENT_ID = "event.sensor_1_ota_result"


def ustar_package() -> bytes:
    """Return a plain ustar archive, a package the firmware can apply."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        body = b"print('hello')\n"
        member = tarfile.TarInfo("main.py")
        member.size = len(body)
        tar.addfile(member, io.BytesIO(body))
    return buffer.getvalue()


@pytest.fixture
def mock_console(
    mock_console: AiohttpClientMocker, console_devices: list[dict[str, Any]]
) -> AiohttpClientMocker:
    """Serve a valid ustar package: `register_package` refuses what the firmware cannot apply."""
    mock_console.clear_requests()
    mock_console.get(f"{API}/device/list", json=console_devices)
    mock_console.get(f"{API}/packages/download", content=ustar_package())
    return mock_console


def sensor(hass: HomeAssistant, entity_id: str = SENSOR_ID) -> Any:
    """Return the sensor's state object."""
    state = hass.states.get(entity_id)
    assert state is not None
    return state


async def test_idle_before_any_job(
    hass: HomeAssistant, setup_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """Without a job the sensor is idle, an enum of every state, with no job attributes."""
    state = sensor(hass)
    assert state.state == "idle"
    assert state.attributes[ATTR_DEVICE_CLASS] == SensorDeviceClass.ENUM
    assert state.attributes[ATTR_OPTIONS] == [
        "idle",
        "queued",
        "applied",
        "verified",
        "failed",
        "cancelled",
        "timed_out",
        "outcome_unknown",
    ]
    assert "file_id" not in state.attributes
    assert "history" not in state.attributes

    entry = entity_registry.async_get(SENSOR_ID)
    assert entry is not None
    assert entry.unique_id == f"{DEVICE_ID}_ota_status"
    assert entry.translation_key == "ota_status"
    assert entry.entity_category is None  # A primary status, not a diagnostic.


async def test_follows_job_to_verified(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Install makes it queued with the job's details; the report and /stat move it on."""
    await fire(hass, stat_topic(), stat_payload("1a2b3c4"))
    await register(hass, "1.1.0")
    await install(hass)

    state = sensor(hass)
    assert state.state == "queued"
    attrs = state.attributes
    assert attrs["file_id"] == PACKAGE_ID
    assert attrs["version"] == "1.1.0"
    assert attrs["reason"] is None
    assert attrs["attempts"] == 0
    assert attrs["deadline"] is not None
    assert attrs["unverified"] is False
    assert attrs["request_gone"] is False
    assert attrs["requested_at"] == attrs["updated_at"]
    assert attrs["history"] == [
        {
            "state": "queued",
            "version": "1.1.0",
            "file_id": PACKAGE_ID,
            "reason": None,
            "requested_at": attrs["requested_at"],
            "updated_at": attrs["updated_at"],
        }
    ]

    await fire(hass, ota_topic(), report(1))
    state = sensor(hass)
    assert state.state == "applied"
    assert state.attributes["deadline"] is not None  # The verify window.
    assert state.attributes["unverified"] is False

    await fire(hass, stat_topic(), stat_payload("4f1c2a9"))
    state = sensor(hass)
    assert state.state == "verified"
    assert state.attributes["deadline"] is None
    assert [job["state"] for job in state.attributes["history"]] == ["verified"]


async def test_failed_with_reason(hass: HomeAssistant, setup_integration: MockConfigEntry) -> None:
    """A failure report ends the job failed, with the device's reason."""
    await register(hass, "1.1.0")
    await install(hass)
    await fire(hass, ota_topic(), report(2, reason="not enough space"))

    state = sensor(hass)
    assert state.state == "failed"
    assert state.attributes["reason"] == "not enough space"
    assert state.attributes["deadline"] is None
    assert state.attributes["history"][-1]["reason"] == "not enough space"


async def test_download_retries_count_attempts(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A download the device will retry keeps the job queued and counts the attempt."""
    await register(hass, "1.1.0")
    await install(hass)
    await fire(hass, ota_topic(), report(2, reason="can not download"))

    state = sensor(hass)
    assert state.state == "queued"
    assert state.attributes["attempts"] == 1
    assert state.attributes["reason"] == "can not download"


async def test_history_after_two_jobs(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """The history lists each job once, oldest first, trimmed to the essentials."""
    await register(hass, "1.1.0")
    await install(hass)
    await fire(hass, ota_topic(), report(2, reason="not enough space"))
    await register(hass, "1.2.0", file_id="5a5a5a5a")
    await install(hass, "1.2.0")

    state = sensor(hass)
    assert state.state == "queued"
    assert state.attributes["version"] == "1.2.0"
    history = state.attributes["history"]
    assert [(job["state"], job["version"], job["file_id"]) for job in history] == [
        ("failed", "1.1.0", PACKAGE_ID),
        ("queued", "1.2.0", "5a5a5a5a"),
    ]
    assert history[0]["reason"] == "not enough space"
    assert all(
        set(job) == {"state", "version", "file_id", "reason", "requested_at", "updated_at"}
        for job in history
    )


async def test_vanished_request_ends_outcome_unknown(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A job the tracker ends `unknown` shows as `outcome_unknown`, never HA's own `unknown`."""
    await register(hass, "1.1.0")
    await install(hass)
    topic, request, _qos, _retain = mqtt_mock.async_publish.call_args.args
    # The broker echoes our retained request, then it vanishes without a report.
    await fire(hass, topic, request)
    await fire(hass, topic, "")
    assert sensor(hass).attributes["request_gone"] is True

    await fire(hass, stat_topic(), stat_payload("0000000"))
    state = sensor(hass)
    assert state.state == "outcome_unknown"
    assert state.attributes["history"][-1]["state"] == "outcome_unknown"


async def test_new_device_gets_entities_without_reload(
    hass: HomeAssistant,
    *,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    console_devices: list[dict[str, Any]],
    freezer: FrozenDateTimeFactory,
    entity_registry: er.EntityRegistry,
) -> None:
    """A device the console lists later gets its sensor and event at the next poll."""
    assert hass.states.get("sensor.sensor_2_ota_status") is None
    console_devices.append(console_device(OTHER_DEVICE_ID, "Sensor 2"))
    mock_console.clear_requests()
    mock_console.get(f"{API}/device/list", json=console_devices)
    freezer.tick(DEVICE_LIST_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()

    assert sensor(hass, "sensor.sensor_2_ota_status").state == "idle"
    assert hass.states.get("event.sensor_2_ota_result") is not None
    # One of each per device, the first device's kept as they were (and the account's four
    # sensors, which are no console device's).
    assert len(hass.states.async_entity_ids("sensor")) == 2 + 4
    assert len(hass.states.async_entity_ids("event")) == 2
    assert {
        entry.unique_id
        for entry in er.async_entries_for_config_entry(entity_registry, setup_integration.entry_id)
        if entry.domain in ("sensor", "event")
        and not entry.unique_id.startswith(setup_integration.entry_id)
    } == {
        f"{DEVICE_ID}_ota_status",
        f"{DEVICE_ID}_ota_result",
        f"{OTHER_DEVICE_ID}_ota_status",
        f"{OTHER_DEVICE_ID}_ota_result",
    }


async def test_unique_ids_survive_reload(
    hass: HomeAssistant, setup_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """A reload finds the same registry entries: ids come from the device id, not its name."""
    before = {
        entry.entity_id: entry.unique_id
        for entry in er.async_entries_for_config_entry(entity_registry, setup_integration.entry_id)
    }
    assert await hass.config_entries.async_reload(setup_integration.entry_id)
    await hass.async_block_till_done()
    after = {
        entry.entity_id: entry.unique_id
        for entry in er.async_entries_for_config_entry(entity_registry, setup_integration.entry_id)
    }
    assert after == before
    assert before[SENSOR_ID] == f"{DEVICE_ID}_ota_status"
    assert before[EVENT_ID] == f"{DEVICE_ID}_ota_result"


async def test_timed_out(
    hass: HomeAssistant, setup_integration: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """A device that never picks the request up ends the job timed out."""
    await register(hass, "1.1.0")
    await install(hass)
    freezer.tick(timedelta(days=8))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()

    state = sensor(hass)
    assert state.state == "timed_out"
    assert state.attributes["reason"] == "the device did not report in time"
