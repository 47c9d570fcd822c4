"""MQTT-only mode end to end: no console account, devices found on a real broker, discovery.

Home Assistant never talks to the console stand-in here. It runs only because the simulated
devices download their packages from it, as real devices download from the console.
"""

from pathlib import Path

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.insighio_ota.const import DOMAIN, EVENT_OTA_STATUS
from simulator.packages import write_package

from .conftest import (
    Simulator,
    StartSimulator,
    retained_on,
    wait_for,
    wait_for_our_subscriptions,
    wait_for_subscription,
)
from .helpers import ota_topic, start_devices


def update_entity(hass: HomeAssistant, device_id: str) -> str | None:
    """Return the update entity of a device, None while it has none."""
    return er.async_get(hass).async_get_entity_id("update", DOMAIN, f"{device_id}_firmware")


async def add_mqtt_only_entry(hass: HomeAssistant, console: Simulator) -> MockConfigEntry:
    """Add an MQTT-only entry for the stand-in's project through the real config flow."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "mqtt_only"}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {
            "data_channel": console.ready["data_channel"],
            "control_channel": console.ready["control_channel"],
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    await hass.async_block_till_done()
    entry = hass.config_entries.async_get_entry(result["result"].entry_id)
    assert entry is not None
    assert entry.state is ConfigEntryState.LOADED
    return entry  # type: ignore[return-value]


async def wait_for_all_subscriptions(hass: HomeAssistant, console: Simulator) -> None:
    """Wait until the broker acknowledged telemetry, /ota and /stat of the project."""
    await wait_for_our_subscriptions(hass, console)
    await wait_for_subscription(hass, f"channels/{console.ready['data_channel']}/messages/+", 0)


async def test_mqtt_only_device_found_and_updated(
    hass: HomeAssistant,
    real_mqtt: MockConfigEntry,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
) -> None:
    """A device appears from its own traffic, takes a package described by type and size."""
    path = write_package(packages_dir, "4f1c2a9e", "ustar", sw_commit="4f1c2a9")
    console = await simulators("console", "--devices", "1", "--packages", str(packages_dir))
    entry = await add_mqtt_only_entry(hass, console)
    await wait_for_all_subscriptions(hass, console)
    assert entry.runtime_data.coordinator.data == {}
    device = console.devices[0]
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    await start_devices(simulators, mosquitto, console)
    await wait_for(
        lambda: (
            (entity_id := update_entity(hass, device["id"])) is not None
            and hass.states.get(entity_id) is not None
            and hass.states.get(entity_id).attributes["installed_version"] == "master@1a2b3c4"
        ),
        15,
        "the device to appear from its telemetry and boot /stat",
    )
    entity_id = update_entity(hass, device["id"])
    assert entity_id is not None
    assert entry.runtime_data.coordinator.data[device["id"]].name == f"insigh.io {device['serial']}"

    response = await hass.services.async_call(
        DOMAIN,
        "register_package",
        {
            "file_id": "4f1c2a9e",
            "file_type": ".tar",
            "size": path.stat().st_size,
            "version": "1.1.0",
            "sw_commit": "4f1c2a9",
        },
        blocking=True,
        return_response=True,
    )
    assert response["sha256"] is None
    assert hass.states.get(entity_id).state == "on"

    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    await wait_for(
        lambda: hass.states.get(entity_id).attributes["ota_state"] == "verified",
        30,
        "the device to apply the package and reboot",
    )
    state = hass.states.get(entity_id)
    assert state.state == "off"
    assert state.attributes["installed_version"] == "1.1.0"
    assert [event.data["state"] for event in events] == ["queued", "applied", "verified"]
    assert await retained_on(hass, ota_topic(console, device["id"])) == []


async def test_discovery_offers_the_project_of_telemetry(
    hass: HomeAssistant,
    real_mqtt: MockConfigEntry,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
) -> None:
    """Telemetry on HA's broker starts one flow; confirming it follows the project's devices."""
    console = await simulators("console", "--devices", "2", "--packages", str(packages_dir))
    data_channel = console.ready["data_channel"]
    talked: set[str] = set()

    def _telemetry(message: mqtt.ReceiveMessage) -> None:
        talked.add(message.topic.rsplit("/", 1)[-1])

    telemetry = f"channels/{data_channel}/messages/+"
    unsubscribe = await mqtt.async_subscribe(hass, telemetry, _telemetry, qos=0)
    await wait_for_subscription(hass, telemetry, 0)

    await start_devices(simulators, mosquitto, console, count=2)

    def _flows() -> list[dict[str, object]]:
        return [
            flow
            for flow in hass.config_entries.flow.async_progress_by_handler(DOMAIN)
            if flow["context"]["source"] == "mqtt"
        ]

    await wait_for(lambda: bool(_flows()), 15, "MQTT discovery to start a flow")
    # Both devices keep talking; the project still has a single flow.
    await wait_for(lambda: {d["id"] for d in console.devices} <= talked, 10, "both devices to talk")
    unsubscribe()
    assert len(_flows()) == 1
    flow = _flows()[0]
    assert flow["step_id"] == "mqtt_confirm"
    result = await hass.config_entries.flow.async_configure(str(flow["flow_id"]))
    assert result["type"] is FlowResultType.FORM
    assert result["description_placeholders"] == {"data_channel": data_channel}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"control_channel": console.ready["control_channel"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    entry = result["result"]
    assert entry.unique_id == data_channel
    await wait_for(
        lambda: {d["id"] for d in console.devices} <= set(entry.runtime_data.coordinator.data),
        15,
        "the devices to appear from their telemetry",
    )
    assert _flows() == []
