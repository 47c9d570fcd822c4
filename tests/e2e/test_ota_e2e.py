"""A console package installed on a simulated device through a real broker, end to end."""

import asyncio
from pathlib import Path

from homeassistant.components import mqtt
from homeassistant.components.persistent_notification import (
    _async_get_or_create_notifications,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import async_capture_events

from custom_components.insighio_ota.const import DOMAIN, EVENT_OTA_STATUS
from simulator.packages import write_package

from .conftest import SetupIntegration, StartSimulator, wait_for

WAKE = ("--wake-period", "1", "--listen-window", "2")


def _entity_id(hass: HomeAssistant, device_id: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("update", DOMAIN, f"{device_id}_firmware")
    assert entity_id is not None
    return entity_id


async def _retained_on(hass: HomeAssistant, topic: str) -> list[str]:
    """Subscribe afresh and return what the broker keeps retained on a topic."""
    received: list[str] = []

    def _collect(message: mqtt.ReceiveMessage) -> None:
        if message.retain and message.payload:
            received.append(str(message.payload))

    unsubscribe = await mqtt.async_subscribe(hass, topic, _collect, qos=1)
    # The broker sends retained messages right after the subscription; give it time to.
    await asyncio.sleep(2)
    unsubscribe()
    return received


async def test_install_console_package_on_device(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """Register, install; the device applies it, HA shows the version, the request is gone."""
    write_package(packages_dir, "4f1c2a9e", "ustar", sw_commit="4f1c2a9")
    console = await simulators("console", "--devices", "1", "--packages", str(packages_dir))
    await setup_through_config_flow(console)
    device = console.devices[0]
    entity_id = _entity_id(hass, device["id"])
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    await simulators(
        "devices",
        "--devices",
        "1",
        "--mqtt-port",
        str(mosquitto),
        "--console-url",
        console.console_url,
        *WAKE,
    )
    await wait_for(
        lambda: hass.states.get(entity_id).attributes["installed_version"] == "master@1a2b3c4",
        15,
        "the device's boot /stat",
    )

    response = await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": "4f1c2a9e", "file_type": ".tar", "version": "1.1.0"},
        blocking=True,
        return_response=True,
    )
    assert response["size"] == (packages_dir / "4f1c2a9e.tar").stat().st_size
    assert hass.states.get(entity_id).state == "on"

    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    assert hass.states.get(entity_id).attributes["in_progress"] is True

    await wait_for(
        lambda: hass.states.get(entity_id).attributes["ota_state"] == "verified",
        30,
        "the device to apply the package and reboot",
    )
    state = hass.states.get(entity_id)
    assert state.state == "off"
    assert state.attributes["installed_version"] == "1.1.0"
    assert state.attributes["in_progress"] is False
    assert [event.data["state"] for event in events] == ["queued", "applied", "verified"]
    topic = f"channels/{console.ready['control_channel']}/messages/{device['id']}/ota"
    assert await _retained_on(hass, topic) == []


async def test_package_the_firmware_cannot_apply(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """A real gzip package fails on the device: event, notification, request cleared."""
    # register_package refuses a real gzip, so a valid package is registered under the id and the
    # console's file is swapped for a real gzip afterwards (a re-upload in the console).
    write_package(packages_dir, "0badf00d", "microfreezer")
    console = await simulators("console", "--devices", "1", "--packages", str(packages_dir))
    await setup_through_config_flow(console)
    device = console.devices[0]
    entity_id = _entity_id(hass, device["id"])
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": "0badf00d", "file_type": ".tar.gz", "version": "2.0.0-broken"},
        blocking=True,
    )
    write_package(packages_dir, "0badf00d", "gzip")
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    await simulators(
        "devices",
        "--devices",
        "1",
        "--mqtt-port",
        str(mosquitto),
        "--console-url",
        console.console_url,
        *WAKE,
    )

    await wait_for(
        lambda: hass.states.get(entity_id).attributes["ota_state"] == "failed",
        30,
        "the device's failure report",
    )
    state = hass.states.get(entity_id)
    assert state.attributes["in_progress"] is False
    assert state.attributes["ota_reason"] == "can not apply"
    assert events[-1].data["state"] == "failed"
    assert events[-1].data["reason"] == "can not apply"
    notifications = _async_get_or_create_notifications(hass)
    assert any("can not apply" in n["message"] for n in notifications.values())
    topic = f"channels/{console.ready['control_channel']}/messages/{device['id']}/ota"
    assert await _retained_on(hass, topic) == []
