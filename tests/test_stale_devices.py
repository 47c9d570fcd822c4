"""Devices the console no longer lists leave HA; the user may remove such a device too."""

from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota import async_remove_config_entry_device
from custom_components.insighio_ota.const import DEVICE_LIST_INTERVAL, DOMAIN

from .conftest import API, DEVICE_ID, OTHER_DEVICE_ID, console_device, stat_payload, stat_topic
from .helpers import ENTITY_ID, restart

OTHER_ENTITY_ID = "update.sensor_2_firmware"


async def poll(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    mock_console: AiohttpClientMocker,
    devices: list[dict[str, Any]],
) -> None:
    """Make the console list `devices`, then let the next poll run."""
    mock_console.clear_requests()
    mock_console.get(f"{API}/device/list", json=devices)
    freezer.tick(DEVICE_LIST_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


def device_of(hass: HomeAssistant, device_id: str) -> dr.DeviceEntry | None:
    """Return the HA device of a console device (or of the account) of our one entry."""
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    return dr.async_get(hass).async_get_device_by_identifier((DOMAIN, device_id), entry.entry_id)


async def test_unlisted_device_is_removed_and_comes_back(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    console_devices: list[dict[str, Any]],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A device the console stops listing goes with its entities; listed again, it returns."""
    second = console_device(OTHER_DEVICE_ID, "Sensor 2")
    await poll(hass, freezer, mock_console, [*console_devices, second])
    assert hass.states.get(OTHER_ENTITY_ID) is not None

    await poll(hass, freezer, mock_console, console_devices)

    assert device_of(hass, OTHER_DEVICE_ID) is None
    assert hass.states.get(OTHER_ENTITY_ID) is None
    assert not [
        entity
        for entity in er.async_entries_for_config_entry(
            er.async_get(hass), setup_integration.entry_id
        )
        if entity.unique_id.startswith(OTHER_DEVICE_ID)
    ]
    # The listed device and the account's own service device stay.
    assert device_of(hass, DEVICE_ID) is not None
    assert device_of(hass, setup_integration.entry_id) is not None
    assert hass.states.get(ENTITY_ID).state != "unavailable"

    await poll(hass, freezer, mock_console, [*console_devices, second])

    assert device_of(hass, OTHER_DEVICE_ID) is not None
    assert hass.states.get(OTHER_ENTITY_ID).state != "unavailable"


async def test_device_unlisted_while_ha_was_off_is_removed_at_setup(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
) -> None:
    """The first poll of a restart already drops a device the console stopped listing."""
    mock_console.clear_requests()
    mock_console.get(f"{API}/device/list", json=[])

    await restart(hass, setup_integration)

    assert device_of(hass, DEVICE_ID) is None
    assert device_of(hass, setup_integration.entry_id) is not None


async def test_listed_device_without_key_is_kept(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A device still listed, but unusable for now (no key), is not stale: it only waits."""
    unusable = console_device(DEVICE_ID, "Sensor 1")
    del unusable["key"]

    await poll(hass, freezer, mock_console, [unusable])

    assert device_of(hass, DEVICE_ID) is not None
    assert hass.states.get(ENTITY_ID).state == "unavailable"


async def test_user_may_remove_only_unlisted_devices(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
) -> None:
    """Removing a listed device (or the account's) is refused: the next poll would re-add it."""
    registry = dr.async_get(hass)
    listed = device_of(hass, DEVICE_ID)
    account = device_of(hass, setup_integration.entry_id)
    unlisted = registry.async_get_or_create(
        config_entry_id=setup_integration.entry_id, identifiers={(DOMAIN, "gone")}
    )
    foreign = registry.async_get_or_create(
        config_entry_id=setup_integration.entry_id, identifiers={("other", DEVICE_ID)}
    )

    assert not await async_remove_config_entry_device(hass, setup_integration, listed)
    assert not await async_remove_config_entry_device(hass, setup_integration, account)
    assert await async_remove_config_entry_device(hass, setup_integration, unlisted)
    assert await async_remove_config_entry_device(hass, setup_integration, foreign)


async def test_device_registry_shows_versions_and_serial(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """/stat fills the software, the hardware and the serial number of the device."""
    async_fire_mqtt_message(hass, stat_topic(), stat_payload("0ddba11"))
    await hass.async_block_till_done()

    device = device_of(hass, DEVICE_ID)
    assert device.sw_version == "master@0ddba11"
    assert device.hw_version == "esp32s3"
    assert device.serial_number == "240ac4542f45"

    # A /stat without a serial keeps the one known.
    async_fire_mqtt_message(
        hass, stat_topic(), '[{"vs":"master","n":"sw_branch"},{"vs":"0ddba12","n":"sw_commit"}]'
    )
    await hass.async_block_till_done()
    device = device_of(hass, DEVICE_ID)
    assert device.serial_number == "240ac4542f45"
    assert device.sw_version == "master@0ddba12"
