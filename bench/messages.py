"""Figure 2: what one status report or `/stat` costs, against HA's bare MQTT dispatch.

Both sides go through HA's real MQTT client, connected to a real Mosquitto: each message is a paho
`MQTTMessage` handed to the client's `_async_mqtt_on_message`, the function paho calls for every
message it reads from the socket. From there HA matches the subscriptions, builds the
`ReceiveMessage` and runs the subscriber. Our subscriptions follow the project's control channel;
the no-op subscriber (a `@callback` doing nothing) follows the same filters on a twin channel, so
that the same payloads for the same device ids reach exactly one subscriber each, and HA's matching
walks the same list of wildcard subscriptions in both cases.

    cost(ours)     = CPU time per message with our subscription (HA's dispatch + our handler and
                     everything it triggers: Store write, the clear we publish, events, states)
    cost(baseline) = CPU time per message with the no-op subscriber (HA's dispatch alone)
    ratio          = cost(ours) / cost(baseline)

CPU time (`time.process_time`, every thread of this process: the Store's writer included) is
measured over a batch of one message per device, until HA is idle again. The baseline is measured
right before and right after each batch, and the lower of the two is used, so that both sides see
the same machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass, field
import json
from pathlib import Path
import time
import unittest.mock

from homeassistant.components import mqtt
from homeassistant.components.mqtt.models import DATA_MQTT
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity import Entity
from paho.mqtt.client import MQTTMessage

from custom_components.insighio_ota.catalogue import Package
from custom_components.insighio_ota.coordinator import InsighioOtaConfigEntry
from custom_components.insighio_ota.jobs import JobState
from custom_components.insighio_ota.protocol import OtaRequest

from . import harness
from .report import Figure

PER_MESSAGE_TARGET_US = 50.0
RATIO_TARGET = 1.2
PACKAGE_COMMIT = "5e6f7a8"
# Longer than the integration's deferred writes (JOBS_SAVE_DELAY, FLEET_COALESCE_DELAY).
SETTLE_S = 1.5


@dataclass(frozen=True, slots=True)
class Cost:
    """CPU and wall time of a batch of messages, until HA was idle again."""

    cpu_s: float
    wall_s: float


@dataclass(slots=True)
class StateWrites:
    """How many entity states a batch wrote, and the time spent writing them."""

    count: int = 0
    seconds: float = field(default=0.0)


@contextlib.contextmanager
def counting_state_writes() -> Iterator[StateWrites]:
    """Count and time every entity state write meanwhile.

    A write is HA's state machine plus the entity's own properties (ours: the state, the
    attributes); it is what a user sees change, so it is part of a message's cost. The patched
    method is the one `Entity.async_write_ha_state` looks up at every call: listeners hold the
    public method bound since they subscribed.
    """
    writes = StateWrites()
    original = Entity._async_write_ha_state

    def _write(entity: Entity) -> None:
        start = time.perf_counter()
        try:
            original(entity)
        finally:
            writes.count += 1
            writes.seconds += time.perf_counter() - start

    with unittest.mock.patch.object(Entity, "_async_write_ha_state", _write):
        yield writes


def _message(topic: str, payload: str) -> MQTTMessage:
    """Return a message as paho hands it to HA after reading it from the socket."""
    message = MQTTMessage(topic=topic.encode())
    message.payload = payload.encode()
    message.qos = 1
    message.retain = False
    return message


async def _deliver(hass: HomeAssistant, messages: list[MQTTMessage]) -> Cost:
    """Hand the messages to HA's MQTT client and wait until everything they caused is done.

    What a message defers (the Store write a moment later, the fleet counts written together)
    is part of its cost: every batch, the baseline's too, ends with the same settling time, so
    that both sides also carry the same idle CPU of HA.
    """
    client = hass.data[DATA_MQTT].client
    on_message = client._async_mqtt_on_message
    # HA caches which subscriptions match a topic, and forgets them all whenever anything
    # subscribes or unsubscribes. A fleet's topics repeat, so the steady state is a warm cache:
    # warm it for these topics on both sides, without dispatching anything.
    for message in messages:
        client._matching_subscriptions(message.topic, None)
    await hass.async_block_till_done()
    wall, cpu = time.perf_counter(), time.process_time()
    for message in messages:
        on_message(None, None, message)  # type: ignore[arg-type]
    await hass.async_block_till_done()
    await asyncio.sleep(SETTLE_S)
    await hass.async_block_till_done()
    return Cost(time.process_time() - cpu, time.perf_counter() - wall)


def stat_payload(sw_commit: str) -> str:
    """Return a `/stat` as the firmware sends it after the reboot of an applied OTA."""
    return json.dumps(
        [
            {"vs": "master", "n": "sw_branch"},
            {"vs": sw_commit, "n": "sw_commit"},
            {"vs": "esp32s3", "n": "hw_version"},
            {"v": 1, "n": "fw_v_major"},
            {"v": 26, "n": "fw_v_minor"},
            {"v": 0, "n": "fw_v_patch"},
            {"v": 900000, "n": "free_flash"},
            {"vs": "240ac4542f45", "n": "serial"},
        ],
        separators=(",", ":"),
    )


def _kinds(package: Package) -> list[tuple[str, str, str, JobState]]:
    """Return each measured message: its name, topic kind, payload, and the job state after."""
    fid = package.file_id
    return [
        (
            "/ota e=0 (our request echoed)",
            "ota",
            OtaRequest(fid, package.file_type, package.size).to_payload(),
            JobState.QUEUED,
        ),
        (
            "/ota e=2 can not download (1st try)",
            "ota",
            json.dumps(
                [{"v": 2, "n": "e"}, {"vs": fid, "n": "i"}, {"vs": "can not download", "n": "m"}]
            ),
            JobState.QUEUED,
        ),
        (
            "/ota e=1 applied",
            "ota",
            json.dumps([{"v": 1, "n": "e"}, {"vs": fid, "n": "i"}]),
            JobState.APPLIED,
        ),
        (
            "/stat after the reboot (verifies)",
            "stat",
            stat_payload(PACKAGE_COMMIT),
            JobState.VERIFIED,
        ),
    ]


async def _open_jobs(hass: HomeAssistant, entry: InsighioOtaConfigEntry) -> Package:
    """Register a package and request it for every device, as a user's rollout would."""
    runtime = entry.runtime_data
    package = await runtime.catalogue.async_add(
        file_id="be0c0001",
        file_type=".tar",
        size=4096,
        sha256="0" * 64,
        version="bench-1",
        release_notes=None,
        sw_commit=PACKAGE_COMMIT,
    )
    for device_id in runtime.coordinator.data:
        await runtime.tracker.async_request(device_id, package)
    # Our requests come back from the broker: the jobs know their request is on it.
    await harness.wait_for(
        lambda: all(job.on_broker for job in runtime.tracker._jobs.values()),
        60,
        "the broker to echo every request",
    )
    await hass.async_block_till_done()
    return package


async def run(run_dir: Path, port: int, devices: int) -> list[Figure]:
    """Measure each kind of message once per device, with the baseline around it."""
    figures: list[Figure] = []
    async with (
        harness.console(run_dir, devices) as console,
        harness.home_assistant(harness.fresh(run_dir, "messages"), port) as hass,
    ):
        entry: InsighioOtaConfigEntry = harness.add_entry(hass, console.url)
        await harness.set_up_and_wait_for_subscriptions(hass, entry, console)
        package = await _open_jobs(hass, entry)
        twin = console.control_channel[::-1]

        @callback
        def _no_op(_message: mqtt.ReceiveMessage) -> None:
            """Do nothing: what HA's dispatch costs without a subscriber's own work."""

        unsubscribes = [
            await mqtt.async_subscribe(hass, f"channels/{twin}/messages/+/{kind}", _no_op, qos=1)
            for kind in ("ota", "stat")
        ]
        tracker = entry.runtime_data.tracker
        ids = list(entry.runtime_data.coordinator.data)
        try:
            for name, kind, payload, expected in _kinds(package):
                ours = [
                    _message(f"channels/{console.control_channel}/messages/{i}/{kind}", payload)
                    for i in ids
                ]
                bare = [_message(f"channels/{twin}/messages/{i}/{kind}", payload) for i in ids]
                before = await _deliver(hass, bare)
                with counting_state_writes() as writes:
                    cost = await _deliver(hass, ours)
                after = await _deliver(hass, bare)
                states = {tracker.job(i).state for i in ids}  # type: ignore[union-attr]
                if states != {expected}:
                    raise RuntimeError(f"{name}: the jobs ended {states}, not {expected}")
                figures.extend(
                    _figures(
                        name, ours=cost, before=before, after=after, writes=writes, count=len(ids)
                    )
                )
        finally:
            for unsubscribe in unsubscribes:
                unsubscribe()
    return figures


def _figures(
    name: str, *, ours: Cost, before: Cost, after: Cost, writes: StateWrites, count: int
) -> list[Figure]:
    per: Callable[[float], float] = lambda seconds: seconds / count * 1e6  # noqa: E731
    # Whatever else HA did meanwhile can only add to a baseline: the lower one is the dispatch.
    baseline = min(before.cpu_s, after.cpu_s)
    return [
        Figure(
            f"{name}: CPU per message",
            per(ours.cpu_s),
            "us",
            PER_MESSAGE_TARGET_US,
            f"HA's bare dispatch {per(baseline):.1f} us; "
            f"our part {per(ours.cpu_s - baseline):.1f} us, of which {writes.count / count:g} "
            f"entity state writes {per(writes.seconds):.1f} us",
        ),
        Figure(
            f"{name}: ratio to bare dispatch",
            ours.cpu_s / baseline,
            "x",
            RATIO_TARGET,
            f"baseline before/after {per(before.cpu_s):.1f}/{per(after.cpu_s):.1f} us",
        ),
    ]
