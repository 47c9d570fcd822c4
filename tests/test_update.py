"""The update entity of a device, from install to the device's report."""

import json
from typing import Any

from homeassistant.components.update import UpdateEntityFeature
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message

from custom_components.insighio_ota.const import DOMAIN

from .conftest import PACKAGE_ID, ota_topic, stat_payload, stat_topic

ENTITY_ID = "update.sensor_1_firmware"


async def test_install_until_device_applies(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Install publishes the retained request; e=1 then /stat make the package installed."""
    async_fire_mqtt_message(hass, stat_topic(), stat_payload())
    await hass.async_block_till_done()
    state = hass.states.get(ENTITY_ID)
    assert state is not None
    assert state.attributes["installed_version"] == "master@1a2b3c4"

    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": PACKAGE_ID, "file_type": ".tar", "version": "1.1.0"},
        blocking=True,
    )
    assert hass.states.get(ENTITY_ID).state == "on"

    await hass.services.async_call("update", "install", {"entity_id": ENTITY_ID}, blocking=True)
    assert mqtt_mock.async_publish.call_args.args == (
        ota_topic(),
        json.dumps(
            [
                {"n": "e", "v": 0},
                {"n": "i", "vs": PACKAGE_ID},
                {"n": "t", "vs": ".tar"},
                {"n": "s", "v": 3987},
            ],
            separators=(",", ":"),
        ),
        1,
        True,
    )
    assert hass.states.get(ENTITY_ID).attributes["in_progress"] is True

    async_fire_mqtt_message(hass, ota_topic(), '[{"v":1,"n":"e"},{"vs":"4f1c2a9e","n":"i"}]')
    await hass.async_block_till_done()
    assert mqtt_mock.async_publish.call_args.args == (ota_topic(), "", 1, True)
    state = hass.states.get(ENTITY_ID)
    assert state.attributes["installed_version"] == "1.1.0"
    assert state.attributes["in_progress"] is True

    async_fire_mqtt_message(hass, stat_topic(), stat_payload("4f1c2a9"))
    await hass.async_block_till_done()
    state = hass.states.get(ENTITY_ID)
    assert state.state == "off"
    assert state.attributes["in_progress"] is False
    assert state.attributes["ota_state"] == "verified"


async def test_entity_describes_firmware_update(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """The entity is a firmware update that can install, pick a version and show progress."""
    state = hass.states.get(ENTITY_ID)
    assert state is not None
    assert state.attributes["device_class"] == "firmware"
    assert state.attributes["title"] == "insighioNode"
    features = UpdateEntityFeature(state.attributes["supported_features"])
    assert UpdateEntityFeature.INSTALL in features
    assert UpdateEntityFeature.SPECIFIC_VERSION in features
    assert UpdateEntityFeature.PROGRESS in features
    assert UpdateEntityFeature.RELEASE_NOTES in features
    assert UpdateEntityFeature.BACKUP not in features
    # No job yet: no OTA attributes to show.
    assert "ota_state" not in state.attributes


async def test_install_with_nothing_newer_is_refused(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Once the device runs the latest package, Install has nothing to do and publishes nothing."""
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": PACKAGE_ID, "version": "1.1.0"},
        blocking=True,
    )
    await hass.services.async_call("update", "install", {"entity_id": ENTITY_ID}, blocking=True)
    async_fire_mqtt_message(hass, ota_topic(), '[{"n":"e","v":1},{"n":"i","vs":"4f1c2a9e"}]')
    async_fire_mqtt_message(hass, stat_topic(), stat_payload("4f1c2a9"))
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY_ID).state == "off"
    mqtt_mock.async_publish.reset_mock()

    with pytest.raises(HomeAssistantError) as exc_info:
        await hass.services.async_call("update", "install", {"entity_id": ENTITY_ID}, blocking=True)

    assert exc_info.value.translation_key == "no_update_available"
    assert not mqtt_mock.async_publish.called
