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


async def register_for(hass: HomeAssistant, file_id: str, version: str, **data: Any) -> None:
    """Register a package (the console serves the same valid bytes for every file id)."""
    await hass.services.async_call(
        DOMAIN, "register_package", {"file_id": file_id, "version": version, **data}, blocking=True
    )


async def release_notes(hass: HomeAssistant, hass_ws_client: Any) -> str | None:
    """Return the release notes the frontend would show."""
    client = await hass_ws_client(hass)
    await client.send_json({"id": 1, "type": "update/release_notes", "entity_id": ENTITY_ID})
    result = await client.receive_json()
    assert result["success"]
    return result["result"]


async def test_latest_version_follows_hardware(
    hass: HomeAssistant, setup_integration: MockConfigEntry, hass_ws_client: Any
) -> None:
    """The latest version, summary and notes are those of the newest compatible package."""
    await register_for(hass, "aaaa0001", "1.0", release_notes="Generic\nfor all")
    await register_for(hass, "aaaa0002", "1.5-s3", release_notes="# S3\nmore", hardware=["esp32s3"])
    await register_for(hass, "aaaa0003", "2.0-s2", release_notes="S2 only", hardware=["esp32s2"])

    # Before any /stat the hardware is unknown: only packages for all hardware apply.
    state = hass.states.get(ENTITY_ID)
    assert state.attributes["latest_version"] == "1.0"
    assert state.attributes["release_summary"] == "Generic"
    assert await release_notes(hass, hass_ws_client) == "Generic\nfor all"

    async_fire_mqtt_message(hass, stat_topic(), stat_payload())  # hw_version esp32s3
    await hass.async_block_till_done()
    state = hass.states.get(ENTITY_ID)
    assert state.attributes["latest_version"] == "1.5-s3"
    assert state.attributes["release_summary"] == "# S3"
    assert await release_notes(hass, hass_ws_client) == "# S3\nmore"


async def test_install_of_other_hardware_refused(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A package for other hardware families cannot be installed, by name or not at all."""
    async_fire_mqtt_message(hass, stat_topic(), stat_payload())  # hw_version esp32s3
    await hass.async_block_till_done()
    await register_for(hass, "aaaa0001", "2.0-s2", hardware=["esp32s2", "esp8266"])
    assert hass.states.get(ENTITY_ID).attributes["latest_version"] is None
    mqtt_mock.async_publish.reset_mock()

    with pytest.raises(HomeAssistantError) as exc_info:
        await hass.services.async_call(
            "update", "install", {"entity_id": ENTITY_ID, "version": "2.0-s2"}, blocking=True
        )

    assert exc_info.value.translation_key == "incompatible_package"
    assert str(exc_info.value) == (
        "Package 2.0-s2 is for esp32s2, esp8266 devices, and this device reports esp32s3"
    )
    assert not mqtt_mock.async_publish.called


async def test_skipped_version_survives_reload(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Skipping the latest version is remembered when the entry (or HA) starts again."""
    async_fire_mqtt_message(hass, stat_topic(), stat_payload())
    await hass.async_block_till_done()
    await register_for(hass, "aaaa0001", "1.0")
    assert hass.states.get(ENTITY_ID).state == "on"
    await hass.services.async_call("update", "skip", {"entity_id": ENTITY_ID}, blocking=True)
    assert hass.states.get(ENTITY_ID).attributes["skipped_version"] == "1.0"

    assert await hass.config_entries.async_reload(setup_integration.entry_id)
    await hass.async_block_till_done()

    state = hass.states.get(ENTITY_ID)
    assert state.attributes["skipped_version"] == "1.0"
    assert state.state == "off"
