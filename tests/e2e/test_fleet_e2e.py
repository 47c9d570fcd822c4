"""Fleet operations end to end: a staged rollout to 20 devices and the maintenance window.

Real Mosquitto, HA's real MQTT integration, the console stand-in and simulated devices (which
behave like the insighioNode 4.1.0 firmware) in their own processes. Devices wake every second,
so a wave takes seconds; only the maintenance window needs HA's clock moved forward.
"""

from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
import json
from pathlib import Path

from homeassistant.components import mqtt
from homeassistant.components.persistent_notification import DOMAIN as PN_DOMAIN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import (
    device_registry as dr,
    issue_registry as ir,
)
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.insighio_ota.const import (
    ATTR_INSIGHIO_DEVICE_ID,
    ATTR_REASON,
    CONF_WINDOW_END,
    CONF_WINDOW_START,
    DOMAIN,
    EVENT_OTA_STATUS,
)
from custom_components.insighio_ota.jobs import JobState
from simulator.identities import INITIAL_SW_COMMIT
from simulator.packages import write_package

from .conftest import (
    SetupIntegration,
    Simulator,
    StartSimulator,
    retained_on,
    wait_for,
    wait_for_subscription,
)
from .helpers import entity_id_of, ota_topic, shown, start_console, start_devices

WAKE = ("--wake-period", "1", "--listen-window", "1")
FILE_ID = "4f1c2a9e"
VERSION = "1.1.0"
NEW_COMMIT = "9c8d7e6"
FLEET = 20
FAILING = 2


# -- helpers ---------------------------------------------------------------------------------


async def _setup(
    hass: HomeAssistant,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    devices: int,
) -> tuple[Simulator, MockConfigEntry]:
    """Start the console with `devices` devices, set the integration up, register a package."""
    write_package(packages_dir, FILE_ID, "ustar", sw_commit=NEW_COMMIT)
    console, entry = await start_console(
        simulators, setup_through_config_flow, packages_dir, devices
    )
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": FILE_ID, "file_type": ".tar", "version": VERSION},
        blocking=True,
    )
    package = entry.runtime_data.catalogue.by_file_id(FILE_ID)
    assert package is not None
    assert package.sw_commit == NEW_COMMIT  # read from the package's version.py
    return console, entry


def _ha_device_id(hass: HomeAssistant, entry: MockConfigEntry, device_id: str) -> str:
    device = dr.async_get(hass).async_get_device_by_identifier((DOMAIN, device_id), entry.entry_id)
    assert device is not None
    return device.id


@dataclass
class Traffic:
    """What crossed the broker since the recording started."""

    # Devices an OTA request (e=0) was published for, by us: HA receives its own publishes.
    requested: set[str] = field(default_factory=set)
    # Telemetry messages per device: one per wake.
    wakes: Counter[str] = field(default_factory=Counter)


RecordTraffic = Callable[[Simulator], Awaitable[Traffic]]


@pytest.fixture
async def record_traffic(
    hass: HomeAssistant, real_mqtt: MockConfigEntry
) -> AsyncGenerator[RecordTraffic]:
    """Follow every /ota topic and the telemetry of a console's project from now on.

    This sees every OTA request the integration ever puts on the broker, not only what is left
    retained at the end, and counts each device's wakes by its telemetry.
    """
    unsubscribes: list[Callable[[], None]] = []

    async def _record(console: Simulator) -> Traffic:
        traffic = Traffic()
        ota = ota_topic(console, "+")
        telemetry = f"channels/{console.ready['data_channel']}/messages/+"

        def _on_ota(message: mqtt.ReceiveMessage) -> None:
            try:
                records = json.loads(message.payload) if message.payload else []
            except ValueError:
                return
            if isinstance(records, list) and {"n": "e", "v": 0} in records:
                traffic.requested.add(message.topic.split("/")[-2])

        def _on_telemetry(message: mqtt.ReceiveMessage) -> None:
            traffic.wakes[message.topic.split("/")[-1]] += 1

        for topic, handler in ((ota, _on_ota), (telemetry, _on_telemetry)):
            unsubscribes.append(await mqtt.async_subscribe(hass, topic, handler, qos=1))
            await wait_for_subscription(hass, topic)
        return traffic

    yield _record
    for unsubscribe in unsubscribes:
        unsubscribe()


# -- a staged rollout ------------------------------------------------------------------------


async def test_rollout_pauses_after_the_wave_that_crosses_the_threshold(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    *,
    record_traffic: RecordTraffic,
) -> None:
    """20 devices, 2 failing in wave 3: canary 1, waves of 5, threshold 10 %.

    The first failure (1 of 11 attempted, 9 %) is under the threshold, the second (2 of 11, 18 %)
    crosses it: the rollout pauses with a notification and a repair issue, the rest of wave 3
    still ends, and the devices of waves 4 and 5 never get a request.
    """
    console, entry = await _setup(hass, packages_dir, simulators, setup_through_config_flow, FLEET)
    ids = [device["id"] for device in console.devices]
    index_of = {device_id: index for index, device_id in enumerate(ids)}
    traffic = await record_traffic(console)
    requested = traffic.requested
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    response = await hass.services.async_call(
        DOMAIN,
        "start_rollout",
        {
            "device_id": [_ha_device_id(hass, entry, device_id) for device_id in ids],
            "name": "night",
            "version": VERSION,
            "canary_count": 1,
            "wave_size": 5,
            "failure_threshold_percent": 10,
        },
        blocking=True,
        return_response=True,
    )
    assert response is not None
    assert response["state"] == "running"
    waves: list[list[str]] = [
        [device["insighio_device_id"] for device in wave] for wave in response["waves"]
    ]
    assert [len(wave) for wave in waves] == [1, 5, 5, 5, 4]
    assert sorted(device_id for wave in waves for device_id in wave) == sorted(ids)
    # The canary's request is out before any device runs.
    await wait_for(lambda: waves[0][0] in requested, 10, "the canary's request")
    assert requested == {waves[0][0]}

    # Two devices of wave 3 (which ones depends on the order by name) fail every OTA.
    third = sorted(index_of[device_id] for device_id in waves[2])
    first_failing = next(i for i in third if i + 1 in third)
    failing = {ids[first_failing], ids[first_failing + 1]}
    await start_devices(
        simulators,
        mosquitto,
        console,
        "--failing-devices",
        str(FAILING),
        "--failing-from",
        str(first_failing),
        count=FLEET,
        wake=WAKE,
    )

    rollout = entry.runtime_data.rollouts.find("night")
    assert rollout is not None
    await wait_for(lambda: rollout.state.value == "paused", 50, "the threshold to pause it")
    assert rollout.current_wave == 3
    assert rollout.pause_reason is not None
    assert "2 of 11" in rollout.pause_reason
    # The rest of wave 3 was already asked: those jobs go on and end.
    await wait_for(lambda: rollout.counts()["queued"] == 0, 20, "wave 3 to end")
    assert rollout.counts() == {
        "pending": 9,
        "skipped": 0,
        "queued": 0,
        "succeeded": 9,
        "failed": 2,
    }
    statuses = {device.device_id: device.status.value for device in rollout.devices}
    assert {d for d, status in statuses.items() if status == "failed"} == failing
    for device_id in failing:
        assert rollout.device(device_id).reason == "can not apply"
    for device_id in [d for wave in waves[:3] for d in wave if d not in failing]:
        assert statuses[device_id] == "succeeded"
        assert shown(hass, entity_id_of(hass, device_id), JobState.VERIFIED)
        assert entry.runtime_data.tracker.stat(device_id).sw_commit == NEW_COMMIT

    # The user is told: a notification and a repair issue.
    assert f"{DOMAIN}_rollout_{rollout.rollout_id}" in hass.data.get(PN_DOMAIN, {})
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"rollout_threshold_{rollout.rollout_id}")
    assert issue is not None
    assert issue.translation_placeholders["failed"] == "2"

    # Later waves are untouched, also after more wakes: no request was ever published for them.
    untouched = [device_id for wave in waves[3:] for device_id in wave]
    tracker = entry.runtime_data.tracker
    wakes = {device_id: traffic.wakes[device_id] for device_id in untouched}
    await wait_for(
        lambda: all(traffic.wakes[d] >= wakes[d] + 2 for d in untouched),
        15,
        "two more wakes of every untouched device",
    )
    assert requested == {d for wave in waves[:3] for d in wave}
    for device_id in untouched:
        assert statuses[device_id] == "pending"
        assert tracker.job(device_id) is None
        assert "ota_state" not in hass.states.get(entity_id_of(hass, device_id)).attributes
        assert tracker.stat(device_id).sw_commit == INITIAL_SW_COMMIT
    assert await retained_on(hass, ota_topic(console, untouched[0])) == []
    # Nothing at all is left retained: successes and `can not apply` were cleared.
    assert await retained_on(hass, ota_topic(console, "+")) == []
    failed_events = [e.data for e in events if e.data["state"] == JobState.FAILED.value]
    assert {data[ATTR_INSIGHIO_DEVICE_ID] for data in failed_events} == failing
    assert {data[ATTR_REASON] for data in failed_events} == {"can not apply"}

    # Aborting ends it for good: the pending devices are skipped, still without a request.
    await hass.services.async_call(DOMAIN, "abort_rollout", {"rollout": "night"}, blocking=True)
    assert rollout.state.value == "aborted"
    assert rollout.counts()["skipped"] == 9
    assert (
        ir.async_get(hass).async_get_issue(DOMAIN, f"rollout_threshold_{rollout.rollout_id}")
        is None
    )
    assert requested == {d for wave in waves[:3] for d in wave}
    listed = await hass.services.async_call(
        DOMAIN, "list_rollouts", {}, blocking=True, return_response=True
    )
    assert listed is not None
    [summary] = listed["rollouts"]
    assert (summary["name"], summary["state"]) == ("night", "aborted")
    assert summary["counts"]["failed"] == 2
    assert summary["counts"]["succeeded"] == 9


# -- the maintenance window ------------------------------------------------------------------


async def test_maintenance_window_holds_the_request_until_it_opens(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    *,
    record_traffic: RecordTraffic,
) -> None:
    """Outside the window nothing reaches the broker; at its start the request goes and applies."""
    console, entry = await _setup(hass, packages_dir, simulators, setup_through_config_flow, 1)
    device_id = console.devices[0]["id"]
    entity_id = entity_id_of(hass, device_id)
    topic = ota_topic(console, device_id)
    # A window from two to three hours from now (local time): now is outside it.
    now = dt_util.now()
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    hass.config_entries.async_update_entry(
        entry,
        options={
            **entry.options,
            CONF_WINDOW_START: f"{start:%H:%M}",
            CONF_WINDOW_END: f"{end:%H:%M}",
        },
    )
    await hass.async_block_till_done()
    traffic = await record_traffic(console)
    requested = traffic.requested
    await start_devices(simulators, mosquitto, console, wake=WAKE)
    tracker = entry.runtime_data.tracker
    await wait_for(lambda: tracker.stat(device_id) is not None, 15, "the device's boot /stat")
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)

    opening = start.replace(second=0, microsecond=0)
    attributes = hass.states.get(entity_id).attributes
    assert attributes["ota_state"] == JobState.QUEUED.value
    assert attributes["in_progress"] is True
    assert dt_util.parse_datetime(attributes["ota_held_until"]) == opening
    # The device wakes and listens a few times: nothing for it on the broker.
    wakes = traffic.wakes[device_id]
    await wait_for(lambda: traffic.wakes[device_id] >= wakes + 2, 15, "two more wakes")
    assert await retained_on(hass, topic) == []
    assert requested == set()
    assert tracker.stat(device_id).sw_commit == INITIAL_SW_COMMIT

    # The window opens: the held request is published, and the device applies it.
    async_fire_time_changed(hass, dt_util.as_utc(opening))
    await hass.async_block_till_done()
    await wait_for(lambda: device_id in requested, 10, "the request at the window's start")
    assert hass.states.get(entity_id).attributes["ota_held_until"] is None
    await wait_for(lambda: shown(hass, entity_id, JobState.VERIFIED), 20, "the device to apply")
    assert tracker.stat(device_id).sw_commit == NEW_COMMIT
    assert hass.states.get(entity_id).attributes["installed_version"] == VERSION
    assert [event.data["state"] for event in events] == ["queued", "applied", "verified"]
    assert await retained_on(hass, topic) == []
