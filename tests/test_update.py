"""The update entity of a device, from install to the device's report."""

import json
from typing import Any

from homeassistant.core import HomeAssistant
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
