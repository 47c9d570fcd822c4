"""Faults a real installation meets, end to end, with Mosquitto, the simulator and HA's MQTT.

The broker dies mid-job or is down at Install, the console answers errors or hangs, and the
control topics fill with garbage while a job runs.
"""

import asyncio
from collections.abc import Callable
import json
import logging
from pathlib import Path
import time
from typing import Any

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.insighio_ota.console import API_TIMEOUT
from custom_components.insighio_ota.const import DOMAIN, EVENT_OTA_STATUS
from custom_components.insighio_ota.jobs import JobState
from simulator.identities import device_identity
from simulator.packages import write_package

from .conftest import (
    Broker,
    SecretWatch,
    SetupIntegration,
    Simulator,
    StartSimulator,
    retained_on,
    wait_for,
    wait_for_our_subscriptions,
)
from .helpers import entity_id_of, ota_topic, shown, start_console, start_devices, states

FILE_ID = "4f1c2a9e"
VERSION = "1.1.0"


async def register_package(hass: HomeAssistant, packages_dir: Path) -> None:
    """Put a package in the console's folder and register it in HA."""
    write_package(packages_dir, FILE_ID, "ustar", sw_commit="4f1c2a9")
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": FILE_ID, "file_type": ".tar", "version": VERSION},
        blocking=True,
    )


def births(watch: SecretWatch) -> int:
    """Return how often HA's MQTT client said it was initialised (subscribed, birth sent)."""
    return sum(
        record.getMessage() == "MQTT client initialized, birth message sent"
        for record in watch.records
    )


async def kill_broker(hass: HomeAssistant, broker: Broker, watch: SecretWatch) -> None:
    """Kill the broker once HA's MQTT client is done starting, and wait until HA notices.

    Killed during the client's start, the broker would fail HA's own birth message, in a task
    of HA's MQTT integration that nobody awaits.
    """
    await wait_for(lambda: births(watch) >= 1, 15, "HA's MQTT client to finish starting")
    broker.kill()
    await wait_for(lambda: not mqtt.is_connected(hass), 10, "HA to see the broker gone")


async def restart_broker(hass: HomeAssistant, broker: Broker, watch: SecretWatch) -> None:
    """Start the broker again; wait until HA reconnected and subscribed to everything again."""
    await hass.async_add_executor_job(broker.start)
    # HA's MQTT client retries every 10 s; it resubscribes before it sends its birth message.
    await wait_for(lambda: births(watch) >= 2, 30, "HA's MQTT client to reconnect")


def job_of(entry: MockConfigEntry, device_id: str) -> Any:
    """Return the tracker's job of a device."""
    return entry.runtime_data.tracker.job(device_id)


# -- the broker ---------------------------------------------------------------------------------


async def test_broker_killed_mid_job_and_restarted(
    hass: HomeAssistant,
    *,
    broker: Broker,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    secret_watch: SecretWatch,
) -> None:
    """The broker dies with a request retained; it comes back, HA resubscribes, the job ends well.

    The device only wakes after the restart: what it applies can only come from the broker's
    persisted retained request, and what HA learns only from its resubscribed topics.
    """
    console, entry = await start_console(simulators, setup_through_config_flow, packages_dir)
    device_id = console.devices[0]["id"]
    entity_id = entity_id_of(hass, device_id)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await register_package(hass, packages_dir)
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    # The broker echoed the retained request back: it holds it, and has saved it to disk.
    await wait_for(lambda: job_of(entry, device_id).on_broker, 10, "the request's echo")
    await wait_for(
        lambda: broker.database.exists() and FILE_ID.encode() in broker.database.read_bytes(),
        10,
        "the broker to persist the retained request",
    )

    await kill_broker(hass, broker, secret_watch)
    assert shown(hass, entity_id, JobState.QUEUED)
    await restart_broker(hass, broker, secret_watch)
    await wait_for_our_subscriptions(hass, console)
    # The restarted broker kept the request, and the job still counts on it.
    assert await retained_on(hass, ota_topic(console, device_id)) == [
        '[{"n":"e","v":0},{"n":"i","vs":"4f1c2a9e"},{"n":"t","vs":".tar"},{"n":"s","v":10240}]'
    ]
    job = job_of(entry, device_id)
    assert job.state is JobState.QUEUED
    assert not job.request_gone

    await start_devices(simulators, broker.port, console)
    await wait_for(
        lambda: shown(hass, entity_id, JobState.VERIFIED), 30, "the device to apply and reboot"
    )
    assert hass.states.get(entity_id).attributes["installed_version"] == VERSION
    assert states(events) == ["queued", "applied", "verified"]
    assert await retained_on(hass, ota_topic(console, device_id)) == []


async def test_install_while_the_broker_is_down(
    hass: HomeAssistant,
    *,
    broker: Broker,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    secret_watch: SecretWatch,
) -> None:
    """Install with the broker down: a translated error, no job, and no request sent later.

    A user who was told the install failed expects nothing to happen: no job shown in progress,
    and no request reaching the device once the broker is back.
    """
    console, entry = await start_console(simulators, setup_through_config_flow, packages_dir)
    device_id = console.devices[0]["id"]
    entity_id = entity_id_of(hass, device_id)
    await register_package(hass, packages_dir)
    await kill_broker(hass, broker, secret_watch)

    with pytest.raises(HomeAssistantError) as exc_info:
        await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    assert exc_info.value.translation_domain == DOMAIN
    assert exc_info.value.translation_key == "mqtt_not_connected"
    assert job_of(entry, device_id) is None
    assert hass.states.get(entity_id).attributes["in_progress"] is False

    await restart_broker(hass, broker, secret_watch)
    await wait_for_our_subscriptions(hass, console)
    # Nothing queued while the broker was down went out after the reconnect.
    assert await retained_on(hass, ota_topic(console, device_id)) == []
    assert job_of(entry, device_id) is None

    # And the user's next try works.
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    await wait_for(lambda: job_of(entry, device_id).on_broker, 10, "the request's echo")
    assert hass.states.get(entity_id).attributes["in_progress"] is True


# -- the console --------------------------------------------------------------------------------

COORDINATOR_FAILED = "Error fetching insighio_ota data"
COORDINATOR_RECOVERED = "Fetching insighio_ota data recovered"


def logged(watch: SecretWatch, start: str, level: int) -> int:
    """Return how many records of our logger at `level` start with `start`."""
    return sum(
        record.name == "custom_components.insighio_ota"
        and record.levelno == level
        and record.getMessage().startswith(start)
        for record in watch.records
    )


async def start_console_with_faults(
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    packages_dir: Path,
) -> tuple[Simulator, MockConfigEntry, Path]:
    """Start a console whose outage the returned file switches, and set the integration up."""
    fault_file = packages_dir.parent / "console-fault"
    console = await simulators(
        "console",
        "--devices",
        "1",
        "--packages",
        str(packages_dir),
        "--fault-file",
        str(fault_file),
    )
    entry = await setup_through_config_flow(console)
    return console, entry, fault_file


async def test_console_errors_and_hangs_keep_entities_available(
    hass: HomeAssistant,
    *,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    secret_watch: SecretWatch,
) -> None:
    """The console fails, then hangs: the entities keep their data and MQTT keeps updating them.

    The outage is logged once (an error) and the recovery once (info), however many polls fail.
    """
    console, entry, fault_file = await start_console_with_faults(
        simulators, setup_through_config_flow, packages_dir
    )
    coordinator = entry.runtime_data.coordinator
    device_id = console.devices[0]["id"]
    entity_id = entity_id_of(hass, device_id)
    status_sensor = hass.states.async_entity_ids("sensor")
    before = {eid: hass.states.get(eid).state for eid in [entity_id, *status_sensor]}

    fault_file.write_text("error")
    for _ in range(3):
        await coordinator.async_refresh()
    assert coordinator.last_update_success is False
    assert {eid: hass.states.get(eid).state for eid in before} == before
    assert "unavailable" not in before.values()
    # OTA facts still arrive over MQTT: the device boots and its /stat shows on the entity.
    await start_devices(simulators, mosquitto, console)
    await wait_for(
        lambda: hass.states.get(entity_id).attributes["installed_version"] == "master@1a2b3c4",
        15,
        "the device's /stat while the console is down",
    )

    with_stat = hass.states.get(entity_id)
    fault_file.write_text("hang")
    started = time.monotonic()
    await coordinator.async_refresh()
    hung_for = time.monotonic() - started
    # The console client gives up after its API timeout, not after minutes.
    assert API_TIMEOUT - 1 < hung_for < API_TIMEOUT + 10, hung_for
    assert hass.states.get(entity_id).state == with_stat.state != "unavailable"
    assert hass.states.get(entity_id).attributes == with_stat.attributes
    assert logged(secret_watch, COORDINATOR_FAILED, logging.ERROR) == 1

    fault_file.unlink()
    for _ in range(2):
        await coordinator.async_refresh()
    assert coordinator.last_update_success is True
    assert logged(secret_watch, COORDINATOR_FAILED, logging.ERROR) == 1
    assert logged(secret_watch, COORDINATOR_RECOVERED, logging.INFO) == 1
    assert hass.states.get(entity_id).attributes["installed_version"] == "master@1a2b3c4"


async def test_console_down_at_startup_retries_setup(
    hass: HomeAssistant,
    *,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """A hanging console makes setup give up in bounded time, then HA retries on its own."""
    console, entry, fault_file = await start_console_with_faults(
        simulators, setup_through_config_flow, packages_dir
    )
    entity_id = entity_id_of(hass, console.devices[0]["id"])
    assert await hass.config_entries.async_unload(entry.entry_id)

    for fault in ("hang", "error"):
        fault_file.write_text(fault)
        started = time.monotonic()
        await hass.config_entries.async_setup(entry.entry_id)
        waited = time.monotonic() - started
        assert entry.state is ConfigEntryState.SETUP_RETRY, fault
        assert waited < API_TIMEOUT + 10, (fault, waited)
        assert "console is unavailable" in str(entry.reason)
        # HA retries by itself (first after about 5 s); the console is back by then.
        fault_file.unlink()
        await wait_for(
            lambda: entry.state is ConfigEntryState.LOADED, 20, f"HA to retry after {fault}"
        )
        assert hass.states.get(entity_id).state != "unavailable"
        if fault == "hang":
            assert await hass.config_entries.async_unload(entry.entry_id)


# -- garbage on the control topics ------------------------------------------------------------

BURST = 1000


def burst_messages(console: Simulator, device_id: str) -> list[tuple[str, bytes]]:
    """Return 1,000 malformed or foreign messages, in the order a test publishes them.

    Malformed payloads on the device's /ota and /stat topics, reports for files no job waits for,
    messages of devices the console does not list, malformed telemetry, topics of another
    project, and a /configResponse that carries the device's key and Wi-Fi password. Nothing
    here is a valid message for the running job.
    """
    control = console.ready["control_channel"]
    data = console.ready["data_channel"]
    key = device_identity(0).key
    ours = f"channels/{control}/messages/{device_id}"
    garbage = [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"null",
        b"{}",
        b'{"n":"e","v":1}',
        b"[" * 5000 + b"]" * 5000,
        b'[{"n":"e","v":"1"},{"n":"i","vs":"4f1c2a9e"}]',
        b'[{"n":"e","v":1},{"n":"i","v":12345678}]',
        b'[{"n":"e","v":true},{"n":"i","vs":"4f1c2a9e"}]',
        '[{"n":"e","v":2},{"n":"i","vs":"\u00e9\u00e9"}]'.encode(),
        b'[{"bn":"x","n":"sw_commit"}]',
    ]
    messages: list[tuple[str, bytes]] = []
    for index in range(BURST):
        kind = index % 10
        payload = garbage[index % len(garbage)]
        stranger = f"00000000-0000-4000-8000-{index:012d}"
        if kind in (0, 1):
            # Not an empty one: on /ota that is the device's clear, which no flag tells from a
            # stranger's (the broker hands a retained clear to subscribers as a live message).
            messages.append((f"{ours}/ota", payload or b"[]"))
        elif kind == 2:
            messages.append((f"{ours}/stat", payload))
        elif kind == 3:
            # A report for a file no job waits for: kept for the user, the job goes on.
            other = f"{index:08x}"
            report = json.dumps([{"n": "e", "v": 1 + index % 2}, {"n": "i", "vs": other}])
            messages.append((f"{ours}/ota", report.encode()))
        elif kind == 4:
            report = json.dumps([{"n": "e", "v": 1}, {"n": "i", "vs": FILE_ID}])
            messages.append((f"channels/{control}/messages/{stranger}/ota", report.encode()))
        elif kind == 5:
            messages.append((f"channels/{control}/messages/{stranger}/stat", payload))
        elif kind == 6:
            messages.append((f"channels/{data}/messages/{device_id}", payload))
        elif kind == 7:
            messages.append((f"channels/{data}/messages/{stranger}/deeper", payload))
        elif kind == 8:
            messages.append((f"channels/{stranger}/messages/{device_id}/ota", payload))
        else:
            uri = f"http://console.insigh.io/config?dk={key}&wifi_pass=hunter2-{index}"
            messages.append((f"{ours}/configResponse", uri.encode()))
    return messages


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish the messages with QoS 1 from a client of our own, as a misbehaving device would."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="burst")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


async def measure_loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """Record how late HA's event loop runs a 50 ms sleep: how unresponsive HA is."""
    while not stop.is_set():
        started = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append(time.monotonic() - started - 0.05)


def received(watch: SecretWatch, topics: Callable[[str], bool]) -> int:
    """Return how many messages HA's MQTT client received on the topics `topics` accepts."""
    return sum(
        record.name.startswith("homeassistant.components.mqtt")
        and record.getMessage().startswith("Received message on ")
        and topics(record.getMessage().removeprefix("Received message on ").split(" ", 1)[0])
        for record in watch.records
    )


async def test_burst_of_malformed_and_foreign_messages(
    hass: HomeAssistant,
    *,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    secret_watch: SecretWatch,
) -> None:
    """1,000 bad messages while a job runs: nothing raised, the job ends right, HA responsive."""
    console, entry = await start_console(simulators, setup_through_config_flow, packages_dir)
    device_id = console.devices[0]["id"]
    entity_id = entity_id_of(hass, device_id)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await register_package(hass, packages_dir)
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    messages = burst_messages(console, device_id)
    control = f"channels/{console.ready['control_channel']}/messages/"
    data = f"channels/{console.ready['data_channel']}/messages/"

    def ours(topic: str) -> bool:
        # What HA subscribed to: /ota and /stat of the project, and its telemetry.
        if topic.startswith(control):
            return topic.endswith(("/ota", "/stat")) and topic.count("/") == 4
        return topic.startswith(data) and topic.count("/") == 3

    expected = sum(ours(topic) for topic, _ in messages)
    already = received(secret_watch, ours)
    first_record = len(secret_watch.records)
    stop = asyncio.Event()
    lags: list[float] = []
    probe = hass.async_create_background_task(measure_loop_lag(stop, lags), "loop lag probe")
    try:
        started = time.monotonic()
        # The device wakes during the burst: the job runs while the garbage arrives.
        await start_devices(simulators, mosquitto, console)
        await hass.async_add_executor_job(publish_all, mosquitto, messages)
        await wait_for(
            lambda: received(secret_watch, ours) >= already + expected,
            30,
            f"HA to receive the {expected} messages it subscribed to",
        )
        handled_in = time.monotonic() - started
        await wait_for(
            lambda: shown(hass, entity_id, JobState.VERIFIED), 30, "the job to end verified"
        )
    finally:
        stop.set()
        await probe
    # The figures of this run, shown with -s.
    print(
        f"burst: {len(messages)} published, {expected} received by HA, handled in "
        f"{handled_in:.2f} s, event loop lag max {max(lags) * 1000:.0f} ms"
    )
    errors = [
        record.full_text
        for record in secret_watch.records[first_record:]
        if record.levelno >= logging.ERROR
    ]
    assert errors == []
    assert states(events) == ["queued", "applied", "verified"]
    state = hass.states.get(entity_id)
    assert state.attributes["installed_version"] == VERSION
    assert state.attributes["in_progress"] is False
    # The reports for other files were kept for the user, at most a few.
    assert len(job_of(entry, device_id).foreign_reports) <= 5
    # HA answered within a second all along, 1,000 messages or not.
    assert max(lags) < 1.0, max(lags)
    assert await retained_on(hass, ota_topic(console, device_id)) == []
