"""Steps the end-to-end tests share: start the console and devices, find what HA shows for them.

The processes themselves (Mosquitto, the simulators) and HA's real MQTT are fixtures in
`conftest.py`; these are plain functions the test modules import.
"""

from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.insighio_ota.const import DOMAIN
from custom_components.insighio_ota.jobs import JobState

from .conftest import SetupIntegration, Simulator, StartSimulator

# Devices wake every second and listen for two: each path of a job takes seconds.
WAKE = ("--wake-period", "1", "--listen-window", "2")


async def start_console(
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    packages_dir: Path,
    devices: int = 1,
) -> tuple[Simulator, MockConfigEntry]:
    """Start the console stand-in with `devices` devices and set the integration up against it."""
    console = await simulators(
        "console", "--devices", str(devices), "--packages", str(packages_dir)
    )
    entry = await setup_through_config_flow(console)
    return console, entry


async def start_devices(
    simulators: StartSimulator,
    mosquitto: int,
    console: Simulator,
    *options: str,
    count: int = 1,
    wake: tuple[str, ...] = WAKE,
) -> Simulator:
    """Start `count` simulated devices; `options` come after (and so override) the wake."""
    return await simulators(
        "devices",
        "--devices",
        str(count),
        "--mqtt-port",
        str(mosquitto),
        "--console-url",
        console.console_url,
        *wake,
        *options,
    )


def entity_id_of(hass: HomeAssistant, device_id: str) -> str:
    """Return the update entity of a console device."""
    entity_id = er.async_get(hass).async_get_entity_id("update", DOMAIN, f"{device_id}_firmware")
    assert entity_id is not None
    return entity_id


def ota_topic(console: Simulator, device_id: str) -> str:
    """Return a device's /ota topic in the console's project."""
    return f"channels/{console.ready['control_channel']}/messages/{device_id}/ota"


def shown(hass: HomeAssistant, entity_id: str, state: JobState) -> bool:
    """Return True once the entity shows the job in `state`: the tracker is done with it.

    The tracker's job moves first, then the request is cleared, then the event fires and the
    entities are written; waiting on the entity waits for all of it.
    """
    return hass.states.get(entity_id).attributes.get("ota_state") == state.value


def states(events: list[Any]) -> list[str]:
    """Return the states of the captured status events."""
    return [event.data["state"] for event in events]
