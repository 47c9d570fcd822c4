"""Setting up and unloading a console account entry."""

from collections.abc import AsyncGenerator
from typing import Any
from unittest.mock import MagicMock

from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.const import DEVICE_LIST_INTERVAL, DOMAIN

from .conftest import (
    API,
    API_KEY,
    CONTROL_CHANNEL,
    DEVICE_ID,
    OTHER_DEVICE_ID,
    console_device,
    stat_payload,
    stat_topic,
)
from .helpers import ENTITY_ID, setup_entry_allowing_failure

OTHER_ENTITY_ID = "update.sensor_2_firmware"


async def next_poll(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    mock_console: AiohttpClientMocker,
    **device_list: Any,
) -> None:
    """Make the console answer the device list with `device_list`, then let the poll run."""
    mock_console.clear_requests()
    mock_console.get(f"{API}/device/list", **device_list)
    freezer.tick(DEVICE_LIST_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


@pytest.fixture
async def mqtt_ready(
    hass: HomeAssistant, mqtt_mock: Any, mqtt_client_mock: Any
) -> AsyncGenerator[Any]:
    """Give HA a mocked MQTT; afterwards unload our entries and close the mocked socket."""
    yield mqtt_mock
    for entry in hass.config_entries.async_entries(DOMAIN):
        await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, MagicMock(fileno=lambda: -1))


async def test_setup_creates_device_and_entity(
    hass: HomeAssistant,
    *,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
    mqtt_mock: Any,
) -> None:
    """Each listed device gets an HA device and a firmware update entity; topics are followed."""
    assert setup_integration.state is ConfigEntryState.LOADED
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, DEVICE_ID), setup_integration.entry_id
    )
    assert device is not None
    assert device.name == "Sensor 1"
    assert device.manufacturer == "insigh.io"
    entity = entity_registry.async_get(ENTITY_ID)
    assert entity is not None
    assert entity.unique_id == f"{DEVICE_ID}_firmware"
    assert entity.device_id == device.id
    state = hass.states.get(ENTITY_ID)
    assert state.state == "unknown"  # No package registered, nothing reported yet.
    assert state.attributes["installed_version"] is None
    # The stored API key, bare (no "Bearer"), authorised the device list.
    list_call = next(c for c in mock_console.mock_calls if str(c[1]).endswith("/device/list"))
    assert list_call[3]["Authorization"] == API_KEY
    subscribed = {call.args[0] for call in mqtt_mock.async_subscribe.call_args_list}
    assert f"channels/{CONTROL_CHANNEL}/messages/+/ota" in subscribed
    assert f"channels/{CONTROL_CHANNEL}/messages/+/stat" in subscribed


async def test_console_unreachable_retries_setup(
    hass: HomeAssistant,
    mqtt_ready: Any,
    aioclient_mock: AiohttpClientMocker,
    config_entry: MockConfigEntry,
) -> None:
    """A console that cannot be reached makes HA retry the setup later."""
    aioclient_mock.get(f"{API}/device/list", status=502)

    await setup_entry_allowing_failure(hass, config_entry)

    assert config_entry.state is ConfigEntryState.SETUP_RETRY
    assert hass.states.get(ENTITY_ID) is None


async def test_revoked_api_key_starts_reauth(
    hass: HomeAssistant,
    mqtt_ready: Any,
    aioclient_mock: AiohttpClientMocker,
    config_entry: MockConfigEntry,
) -> None:
    """A revoked key (401 on the device list) asks the user to sign in again."""
    aioclient_mock.get(f"{API}/device/list", status=401)

    await setup_entry_allowing_failure(hass, config_entry)

    assert config_entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == [SOURCE_REAUTH]
    assert flows[0]["context"]["entry_id"] == config_entry.entry_id


async def test_without_mqtt_not_ready(
    hass: HomeAssistant, mock_console: AiohttpClientMocker, config_entry: MockConfigEntry
) -> None:
    """Without HA's MQTT integration the entry waits for it instead of failing for good."""
    await setup_entry_allowing_failure(hass, config_entry)

    assert config_entry.state is ConfigEntryState.SETUP_RETRY
    assert config_entry.reason == "Home Assistant's MQTT integration is not available yet"
    # Nothing was asked of the console before MQTT was there.
    assert mock_console.call_count == 0
    await hass.config_entries.async_unload(config_entry.entry_id)


async def test_unload(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Unloading removes the entities' state and stops following the device's topics."""
    assert await hass.config_entries.async_unload(setup_integration.entry_id)
    await hass.async_block_till_done()

    assert setup_integration.state is ConfigEntryState.NOT_LOADED
    assert hass.states.get(ENTITY_ID).state == "unavailable"
    # A /stat after unloading reaches nobody: no error, no state change.
    async_fire_mqtt_message(hass, stat_topic(), stat_payload())
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY_ID).state == "unavailable"

    # And it loads again.
    assert await hass.config_entries.async_setup(setup_integration.entry_id)
    await hass.async_block_till_done()
    assert setup_integration.state is ConfigEntryState.LOADED
    assert hass.states.get(ENTITY_ID).state == "unknown"


async def test_new_device_appears_without_reload(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    console_devices: list[dict[str, Any]],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A device added in the console gets its entity at the next poll, and its reports count."""
    assert hass.states.get(OTHER_ENTITY_ID) is None

    console_devices.append(console_device(OTHER_DEVICE_ID, "Sensor 2"))
    await next_poll(hass, freezer, mock_console, json=console_devices)

    assert hass.states.get(OTHER_ENTITY_ID) is not None
    assert hass.states.get(ENTITY_ID) is not None  # Still one entity each, none duplicated.
    assert len(hass.states.async_entity_ids("update")) == 2

    async_fire_mqtt_message(hass, stat_topic(OTHER_DEVICE_ID), stat_payload("feedbee"))
    await hass.async_block_till_done()
    assert hass.states.get(OTHER_ENTITY_ID).attributes["installed_version"] == "master@feedbee"


async def test_device_on_new_control_channel_is_followed(
    hass: HomeAssistant,
    *,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    console_devices: list[dict[str, Any]],
    freezer: FrozenDateTimeFactory,
    mqtt_mock: Any,
) -> None:
    """A device of another project brings a control channel, which gets subscribed."""
    other_channel = "c1c1c1c1-0000-4000-8000-000000000003"
    device = console_device(OTHER_DEVICE_ID, "Sensor 2")
    device["metadata"]["controlChannel"] = other_channel
    console_devices.append(device)

    await next_poll(hass, freezer, mock_console, json=console_devices)

    subscribed = {call.args[0] for call in mqtt_mock.async_subscribe.call_args_list}
    assert f"channels/{other_channel}/messages/+/ota" in subscribed
    async_fire_mqtt_message(
        hass, f"channels/{other_channel}/messages/{OTHER_DEVICE_ID}/stat", stat_payload("0ddba11")
    )
    await hass.async_block_till_done()
    assert hass.states.get(OTHER_ENTITY_ID).attributes["installed_version"] == "master@0ddba11"


async def test_device_removed_from_console_is_removed(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    console_devices: list[dict[str, Any]],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A device the console no longer lists goes with its entities; its reports are ignored.

    More in tests/test_stale_devices.py.
    """
    await next_poll(hass, freezer, mock_console, json=[])

    assert hass.states.get(ENTITY_ID) is None
    async_fire_mqtt_message(hass, stat_topic(), stat_payload())
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY_ID) is None


async def test_console_down_later_keeps_entities_available(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    console_devices: list[dict[str, Any]],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A failed poll keeps the entities with the last known list; a good poll changes nothing."""
    before = hass.states.get(ENTITY_ID)
    assert before.state != "unavailable"
    await next_poll(hass, freezer, mock_console, status=503)
    assert hass.states.get(ENTITY_ID).state == before.state
    assert setup_integration.runtime_data.coordinator.last_update_success is False

    await next_poll(hass, freezer, mock_console, json=console_devices)
    assert hass.states.get(ENTITY_ID).state == before.state
    assert setup_integration.runtime_data.coordinator.last_update_success is True
