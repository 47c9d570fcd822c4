"""A fleet large enough to meet Home Assistant's cap on enabled entities per config entry."""

from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest

from .conftest import DEVICE_ID, OTHER_DEVICE_ID, console_device

UPDATE_IDS = ("update.sensor_1_firmware", "update.sensor_2_firmware")
SECONDARY_IDS = (
    "sensor.sensor_1_ota_status",
    "sensor.sensor_2_ota_status",
    "event.sensor_1_ota_result",
    "event.sensor_2_ota_result",
)


@pytest.fixture
def console_devices() -> list[dict[str, Any]]:
    """Return two devices: a fleet "large" once the threshold is patched below two."""
    return [console_device(DEVICE_ID, "Sensor 1"), console_device(OTHER_DEVICE_ID, "Sensor 2")]


@pytest.fixture
def large_fleet_above_one() -> Iterator[None]:
    """Count two devices as a large fleet (the threshold is 1,000)."""
    with patch("custom_components.insighio_ota.entity.LARGE_FLEET_DEVICES", 1):
        yield


@pytest.fixture
def entity_cap_of_three() -> Iterator[None]:
    """Leave room for three enabled entities per config entry (HA's cap is 10,000)."""
    with patch("homeassistant.helpers.entity_platform.MAX_ENABLED_ENTITIES_PER_CONFIG_ENTRY", 3):
        yield


@pytest.mark.usefixtures("large_fleet_above_one", "setup_integration")
async def test_large_fleet_adds_secondary_entities_disabled(
    hass: HomeAssistant, entity_registry: er.EntityRegistry
) -> None:
    """Above the threshold the OTA status and result entities start disabled; updates stay."""
    for entity_id in UPDATE_IDS:
        assert hass.states.get(entity_id) is not None
    for entity_id in SECONDARY_IDS:
        entry = entity_registry.async_get(entity_id)
        assert entry is not None
        assert entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION
        assert hass.states.get(entity_id) is None


@pytest.mark.usefixtures("setup_integration")
async def test_small_fleet_enables_every_entity(hass: HomeAssistant) -> None:
    """Below the threshold a device's three entities are all there."""
    for entity_id in (*UPDATE_IDS, *SECONDARY_IDS):
        assert hass.states.get(entity_id) is not None


@pytest.mark.usefixtures("entity_cap_of_three", "setup_integration")
async def test_update_entities_win_when_the_cap_is_reached(hass: HomeAssistant) -> None:
    """When HA's cap leaves room for only some entities, every device keeps its update entity."""
    for entity_id in UPDATE_IDS:
        assert hass.states.get(entity_id) is not None
    assert sum(hass.states.get(entity_id) is not None for entity_id in SECONDARY_IDS) <= 1
