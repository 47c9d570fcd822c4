"""The OTA result event of a device: one event per outcome, none for the request itself."""

from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.event import ATTR_EVENT_TYPE, ATTR_EVENT_TYPES
from homeassistant.const import EVENT_STATE_CHANGED, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.insighio_ota.const import EVENT_OTA_STATUS

from .conftest import DEVICE_ID, OTHER_DEVICE_ID, PACKAGE_ID, ota_topic, stat_payload, stat_topic
from .helpers import fire, install, register, report
from .test_sensor import (  # noqa: F401  (`mock_console` serves a package the firmware accepts)
    EVENT_ID,
    mock_console,
)


def results(events: list[Any]) -> list[tuple[str, str, str, str | None]]:
    """Return (event type, file id, version, reason) of each event the entity fired."""
    return [
        (
            state.attributes[ATTR_EVENT_TYPE],
            state.attributes["file_id"],
            state.attributes["version"],
            state.attributes["reason"],
        )
        for event in events
        if event.data["entity_id"] == EVENT_ID and (state := event.data["new_state"]) is not None
    ]


async def test_entity_describes_results(
    hass: HomeAssistant, setup_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """The entity offers every outcome as an event type, not `queued`, and starts empty."""
    state = hass.states.get(EVENT_ID)
    assert state is not None
    assert state.state == STATE_UNKNOWN
    assert state.attributes[ATTR_EVENT_TYPES] == [
        "applied",
        "verified",
        "failed",
        "cancelled",
        "timed_out",
        "unknown",
    ]
    entry = entity_registry.async_get(EVENT_ID)
    assert entry is not None
    assert entry.unique_id == f"{DEVICE_ID}_ota_result"
    assert entry.translation_key == "ota_result"


async def test_applied_then_verified(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Nothing fires for the request; the report fires `applied`, the /stat `verified`."""
    await register(hass, "1.1.0")
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    await install(hass)
    assert results(changes) == []
    assert hass.states.get(EVENT_ID).state == STATE_UNKNOWN

    await fire(hass, ota_topic(), report(1))
    assert results(changes) == [("applied", PACKAGE_ID, "1.1.0", None)]

    await fire(hass, ota_topic(), report(1))  # A duplicate report is no new outcome.
    await fire(hass, stat_topic(), stat_payload("4f1c2a9"))
    assert results(changes) == [
        ("applied", PACKAGE_ID, "1.1.0", None),
        ("verified", PACKAGE_ID, "1.1.0", None),
    ]


async def test_failed_with_reason(hass: HomeAssistant, setup_integration: MockConfigEntry) -> None:
    """A failure fires `failed` with the device's reason."""
    await register(hass, "1.1.0")
    await install(hass)
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    await fire(hass, ota_topic(), report(2, reason="can not apply"))

    assert results(changes) == [("failed", PACKAGE_ID, "1.1.0", "can not apply")]
    state = hass.states.get(EVENT_ID)
    assert state.attributes[ATTR_EVENT_TYPE] == "failed"
    assert state.attributes["reason"] == "can not apply"


async def test_timed_out(
    hass: HomeAssistant, setup_integration: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """A device that never wakes makes the job time out, and the entity says so."""
    await register(hass, "1.1.0")
    await install(hass)
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    freezer.tick(timedelta(days=8))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()

    assert results(changes) == [
        ("timed_out", PACKAGE_ID, "1.1.0", "the device did not report in time")
    ]


async def test_software_mismatch_fires_applied_once(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A /stat showing other software than the package names does not fire `applied` again."""
    await register(hass, "1.1.0")
    await install(hass)
    job = setup_integration.runtime_data.tracker.job(DEVICE_ID)
    assert job is not None
    job.sw_commit = "4f1c2a9"
    status = async_capture_events(hass, EVENT_OTA_STATUS)
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload("deadbee"))

    # The tracker reports the finding; the result was `applied` already.
    assert [(e.data["state"], e.data["reason"] is None) for e in status] == [
        ("applied", True),
        ("applied", False),
    ]
    assert results(changes) == [("applied", PACKAGE_ID, "1.1.0", None)]
    assert hass.states.get("sensor.sensor_1_ota_status").attributes["unverified"] is True


async def test_other_devices_and_entries_ignored(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Status events of other devices, or of a device this entry never asked, fire nothing."""
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    data = {"file_id": PACKAGE_ID, "version": "1.1.0", "state": "failed", "reason": None}
    hass.bus.async_fire(EVENT_OTA_STATUS, {**data, "insighio_device_id": OTHER_DEVICE_ID})
    # Another entry's tracker: this entry has no job for the device.
    hass.bus.async_fire(EVENT_OTA_STATUS, {**data, "insighio_device_id": DEVICE_ID})
    await hass.async_block_till_done()

    assert results(changes) == []
    assert hass.states.get(EVENT_ID).state == STATE_UNKNOWN
