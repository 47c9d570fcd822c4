"""A console package installed on a simulated device through a real broker, end to end."""

from pathlib import Path

from homeassistant.components.persistent_notification import (
    _async_get_or_create_notifications,
)
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import async_capture_events

from custom_components.insighio_ota.const import DOMAIN, EVENT_OTA_STATUS
from simulator.packages import write_package

from .conftest import SetupIntegration, StartSimulator, retained_on, wait_for
from .helpers import entity_id_of, ota_topic, start_console, start_devices


async def test_install_console_package_on_device(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """Register, install; the device applies it, HA shows the version, the request is gone."""
    write_package(packages_dir, "4f1c2a9e", "ustar", sw_commit="4f1c2a9")
    console, _ = await start_console(simulators, setup_through_config_flow, packages_dir)
    device = console.devices[0]
    entity_id = entity_id_of(hass, device["id"])
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    await start_devices(simulators, mosquitto, console)
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
    assert await retained_on(hass, ota_topic(console, device["id"])) == []


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
    console, _ = await start_console(simulators, setup_through_config_flow, packages_dir)
    device = console.devices[0]
    entity_id = entity_id_of(hass, device["id"])
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": "0badf00d", "file_type": ".tar.gz", "version": "2.0.0-broken"},
        blocking=True,
    )
    write_package(packages_dir, "0badf00d", "gzip")
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    await start_devices(simulators, mosquitto, console)

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
    assert await retained_on(hass, ota_topic(console, device["id"])) == []
