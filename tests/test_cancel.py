"""The cancel action takes waiting requests back, for devices or entities as targets."""

from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.insighio_ota.const import DOMAIN

from .conftest import DEVICE_ID, OTHER_DEVICE_ID, console_device, ota_topic
from .helpers import clears, install, register

SENSOR_2 = "update.sensor_2_firmware"


@pytest.fixture
def console_devices() -> list[dict[str, Any]]:
    """Two devices: one gets an update, the other stays idle."""
    return [console_device(DEVICE_ID, "Sensor 1"), console_device(OTHER_DEVICE_ID, "Sensor 2")]


async def test_cancel_by_entity(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Cancelling the entity clears the request and ends the job cancelled."""
    await register(hass)
    await install(hass)

    await hass.services.async_call(
        DOMAIN, "cancel", {"entity_id": "update.sensor_1_firmware"}, blocking=True
    )

    state = hass.states.get("update.sensor_1_firmware")
    assert state is not None
    assert state.attributes["ota_state"] == "cancelled"
    assert state.attributes["in_progress"] is False
    assert clears(mqtt_mock, ota_topic()) == 1


async def test_cancel_by_device_skips_devices_without_a_job(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Targeting both devices cancels the one that waits and leaves the idle one alone."""
    await register(hass)
    await install(hass)
    devices = [
        device_registry.async_get_device_by_identifier(
            (DOMAIN, device_id), setup_integration.entry_id
        )
        for device_id in (DEVICE_ID, OTHER_DEVICE_ID)
    ]

    await hass.services.async_call(
        DOMAIN, "cancel", {"device_id": [d.id for d in devices if d]}, blocking=True
    )

    assert hass.states.get("update.sensor_1_firmware").attributes["ota_state"] == "cancelled"
    assert "ota_state" not in hass.states.get(SENSOR_2).attributes
    assert clears(mqtt_mock, ota_topic(OTHER_DEVICE_ID)) == 0


async def test_cancel_with_nothing_waiting(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A cancel that finds no waiting update says so instead of pretending."""
    with pytest.raises(ServiceValidationError) as exc_info:
        await hass.services.async_call(DOMAIN, "cancel", {"entity_id": SENSOR_2}, blocking=True)
    assert exc_info.value.translation_key == "nothing_to_cancel"


async def test_cancel_ignores_devices_it_does_not_know(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
) -> None:
    """A removed device, another integration's device or entity is not ours to cancel."""
    other = MockConfigEntry(domain="other")
    other.add_to_hass(hass)
    foreign = device_registry.async_get_or_create(
        config_entry_id=other.entry_id, identifiers={("other", "x")}
    )
    foreign_entity = entity_registry.async_get_or_create(
        "sensor", "other", "u1", device_id=foreign.id
    )
    with pytest.raises(ServiceValidationError) as exc_info:
        await hass.services.async_call(
            DOMAIN,
            "cancel",
            {"device_id": ["no-such-device"], "entity_id": foreign_entity.entity_id},
            blocking=True,
        )
    assert exc_info.value.translation_key == "nothing_to_cancel"


async def test_account_device_is_not_a_target(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Targeting the account's fleet sensor reaches no console device (nothing to cancel)."""
    await register(hass)
    await install(hass)
    with pytest.raises(ServiceValidationError) as exc_info:
        await hass.services.async_call(
            DOMAIN,
            "cancel",
            {"entity_id": "sensor.user_example_test_jobs_pending"},
            blocking=True,
        )
    assert exc_info.value.translation_key == "nothing_to_cancel"
    assert hass.states.get("update.sensor_1_firmware").attributes["ota_state"] == "queued"
