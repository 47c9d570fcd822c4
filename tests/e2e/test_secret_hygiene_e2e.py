"""No device key, API key, password or download URL in diagnostics, nor in any log record.

Every end-to-end test already runs with debug logging and fails on a leaked secret (the
`secret_watch` fixture of `conftest.py`). The watch reads HA's MQTT integration's debug records
too, although they are HA's and not ours: HA logs every payload it receives on a topic someone
subscribed to, so what reaches those records is decided by our subscriptions. The device key
travels in `/configResponse` payloads; the integration subscribes to `/ota`, `/stat` and
telemetry only, so HA never receives (nor logs) one. The second test shows the watch would see it.
"""

import json
from pathlib import Path

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
import paho.mqtt.publish as paho_publish
import pytest
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
    get_diagnostics_for_device,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.insighio_ota.const import CONF_API_KEY, DOMAIN
from custom_components.insighio_ota.jobs import JobState
from simulator.identities import device_identity
from simulator.packages import write_package

from .conftest import (
    SecretWatch,
    SetupIntegration,
    StartSimulator,
    wait_for,
    wait_for_subscription,
)
from .helpers import entity_id_of, shown, start_console, start_devices


async def test_diagnostics_after_a_full_ota_hold_no_secret(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    *,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    secret_watch: SecretWatch,
) -> None:
    """Install on two devices, then read the entry's and each device's diagnostics."""
    assert await async_setup_component(hass, "diagnostics", {})
    write_package(packages_dir, "4f1c2a9e", "ustar", sw_commit="4f1c2a9")
    console, entry = await start_console(
        simulators, setup_through_config_flow, packages_dir, devices=2
    )
    await start_devices(simulators, mosquitto, console, count=2)
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": "4f1c2a9e", "file_type": ".tar", "version": "1.1.0"},
        blocking=True,
    )
    entity_ids = [entity_id_of(hass, device["id"]) for device in console.devices]
    await hass.services.async_call("update", "install", {"entity_id": entity_ids}, blocking=True)
    for entity_id in entity_ids:
        await wait_for(
            lambda entity_id=entity_id: shown(hass, entity_id, JobState.VERIFIED),
            30,
            f"{entity_id} to be verified",
        )

    secret_watch.secrets.add(entry.data[CONF_API_KEY])
    documents = [await get_diagnostics_for_config_entry(hass, hass_client, entry)]
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    assert len(devices) == 3  # The two sensors and the account's service device.
    documents.extend(
        [await get_diagnostics_for_device(hass, hass_client, entry, device) for device in devices]
    )
    for document in documents:
        text = json.dumps(document)
        assert secret_watch.leaks(text) == [], text
    # The diagnostics do describe the job: an empty document would hold no secret either.
    assert "4f1c2a9e" in json.dumps(documents[0])
    assert "verified" in json.dumps(documents[0])


async def test_the_watch_sees_a_key_in_ha_mqtt_debug_log(
    hass: HomeAssistant,
    *,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    secret_watch: SecretWatch,
) -> None:
    """Were HA subscribed to /configResponse, its debug log would show the key: the watch fails.

    This is what keeps the other tests honest: the watch does read HA's MQTT records, and would
    fail them had the integration subscribed to a topic carrying a key.
    """
    console, _ = await start_console(simulators, setup_through_config_flow, packages_dir)
    device_id = console.devices[0]["id"]
    topic = f"channels/{console.ready['control_channel']}/messages/{device_id}/configResponse"
    received: list[str] = []
    unsubscribe = await mqtt.async_subscribe(
        hass, topic, lambda message: received.append(str(message.payload))
    )
    try:
        await wait_for_subscription(hass, topic, 0)
        key = device_identity(0).key
        await hass.async_add_executor_job(
            lambda: paho_publish.single(
                topic, f"http://h/config?dk={key}&ssid=x", hostname="127.0.0.1", port=mosquitto
            )
        )
        await wait_for(lambda: bool(received), 10, "HA to receive the /configResponse")
    finally:
        unsubscribe()

    with pytest.raises(AssertionError, match="secrets in the log"):
        secret_watch.check()
    # Forget what this test provoked on purpose, so that the fixture's own check passes.
    secret_watch.records[:] = [
        record for record in secret_watch.records if not secret_watch.leaks(record.full_text)
    ]
