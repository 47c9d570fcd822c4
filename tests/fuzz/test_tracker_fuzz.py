"""The tracker fed with arbitrary MQTT messages, time jumps, installs, cancels and restarts.

Each hypothesis example is a sequence of steps run against one Home Assistant instance (a fresh
one per example would cost seconds): the example starts from an empty job store, the entry
loaded again and nothing retained on the mocked broker. Steps mix what devices really send
(requests echoed, reports, clears, /stat, telemetry) with garbage, messages of devices the
console does not list or on another project's channel, foreign file ids, duplicate reports,
clock jumps, installs and cancels, maintenance window and retry options, and HA restarts (with
the broker's replay of what it retains). Device answers name the file of the job the device has,
so that the deep states (applied, verified, retried, settled from /stat) are reached often.

After every step, what a user could notice must hold:
- nothing raised: no ERROR record was logged (HA logs an exception in an MQTT callback or a task
  as an error);
- every job is in a `JobState`; every open job has a deadline still ahead (a passed deadline
  means its timer was lost and the update would show progress forever), and only a queued job
  may be held for the maintenance window;
- at most one job per device is open: every earlier job in its history has ended;
- a job that left `queued` left no request of its file retained on the broker, so the device
  does not act on it again;
- the update entity shows the tracker's job (state, file id, deadline, progress).

HA's test harness runs this test's coroutine inside its event loop while hypothesis is
synchronous, so hypothesis runs in an executor thread and hands each example to the loop.
"""

import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
import json
import logging
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.mqtt.const import MQTT_PROCESSED_SUBSCRIPTIONS
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.util import dt as dt_util
from hypothesis import example, given, strategies as st
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
    async_fire_time_changed,
)

from custom_components.insighio_ota.const import (
    CONF_NOTIFY_FAILURES,
    CONF_RETRY_CAP,
    CONF_WINDOW_END,
    CONF_WINDOW_START,
    DOMAIN,
    VERIFY_WINDOW,
)
from custom_components.insighio_ota.jobs import JobState
from custom_components.insighio_ota.protocol import ProtocolError, parse_ota_message
from custom_components.insighio_ota.tracker import OtaTracker

from ..conftest import (
    CONTROL_CHANNEL,
    DATA_CHANNEL,
    DEVICE_ID,
    OTHER_DEVICE_ID,
    PACKAGE_ID,
    console_device,
    stat_payload,
)
from ..helpers import (
    BOOT_COMMIT,
    PACKAGE_COMMIT,
    attributes,
    register,
    report,
    request_payload,
    set_options,
    tick,
)
from .budget import fuzz_settings
from .strategies import JSON_SCALARS, TEXT, encoded, payloads, stat_packs, topics

SECOND_ID = "5e6f7a8b"
FOREIGN_ID = "deadbeef"
UNKNOWN_DEVICE_ID = "33333333-3333-4333-8333-333333333333"
OTHER_CONTROL_CHANNEL = "c1c1c1c1-0000-4000-8000-000000000003"
DEVICES = {DEVICE_ID: "update.sensor_1_firmware", OTHER_DEVICE_ID: "update.sensor_2_firmware"}
VERSIONS = {"1.1.0": PACKAGE_ID, "1.2.0": SECOND_ID}
OTA_SUBSCRIPTION = f"channels/{CONTROL_CHANNEL}/messages/+/ota"
FUZZ_START = datetime(2030, 1, 1, 12, tzinfo=UTC)

type Step = tuple[Any, ...]


@pytest.fixture
def console_devices() -> list[dict[str, Any]]:
    """Two listed devices; a third sends messages without being listed."""
    return [console_device(DEVICE_ID, "Sensor 1"), console_device(OTHER_DEVICE_ID, "Sensor 2")]


# -- steps ------------------------------------------------------------------------------------

ANY_DEVICE = st.sampled_from([DEVICE_ID, DEVICE_ID, OTHER_DEVICE_ID, UNKNOWN_DEVICE_ID])
CHANNEL = st.sampled_from([CONTROL_CHANNEL] * 5 + [OTHER_CONTROL_CHANNEL])
FILE_ID = st.sampled_from([PACKAGE_ID, PACKAGE_ID, SECOND_ID, FOREIGN_ID])
REASONS = st.sampled_from(
    [None, "can not download", "can not download", "not enough space", "can not apply"]
)
COMMITS = st.sampled_from([BOOT_COMMIT, PACKAGE_COMMIT, "9f8e7d6"])

OTA_PAYLOADS = st.one_of(
    FILE_ID.map(request_payload),
    st.builds(report, st.sampled_from([1, 1, 2, 2, 2, 3, 7]), FILE_ID, REASONS | TEXT),
    st.just(""),
    payloads(),
)
STAT_PAYLOADS = st.one_of(
    st.builds(stat_payload, COMMITS),
    st.builds(stat_payload, COMMITS, free_flash=st.integers(0, 10_000)),
    st.builds(
        lambda commit, extra: stat_payload(commit, **extra),
        COMMITS | TEXT,
        st.dictionaries(
            TEXT | st.sampled_from(["free_flash", "hw_version"]), JSON_SCALARS, max_size=3
        ),
    ),
    encoded(stat_packs()),
    payloads(),
)
TELEMETRY_PAYLOADS = st.one_of(
    st.builds(
        lambda vbatt: json.dumps([{"n": "vbatt", "v": vbatt}, {"n": "uptime", "v": 70}]),
        st.integers(2000, 4500) | st.floats() | TEXT,
    ),
    payloads(),
)
# Jumps within one wake, between wakes, past the queued timeouts and the verify window.
TIME_JUMPS = st.sampled_from([1, 6, 11, 31, 300, 3600, 6 * 3600, 26 * 3600, 8 * 86400])

LISTED = st.sampled_from(list(DEVICES))
INSTALL = st.tuples(
    st.just("install"), LISTED, st.sampled_from(list(VERSIONS)), st.none() | COMMITS
)
# What a device answers about the job it has (its file id, on its own channel): random file ids
# alone would seldom match a job, and the deep states (applied, verified, retried downloads,
# settled from /stat) would go untested.
DEVICE_ANSWERS = st.one_of(
    st.tuples(st.just("echo"), LISTED, st.booleans()),
    st.tuples(st.just("report"), LISTED, st.sampled_from([1, 1, 2, 2, 2, 3, 7]), REASONS),
    st.tuples(st.just("clear"), LISTED),
    st.tuples(st.just("boot"), LISTED, st.booleans()),
)
STEPS: st.SearchStrategy[Step] = st.one_of(
    INSTALL,
    DEVICE_ANSWERS,
    DEVICE_ANSWERS,
    st.tuples(st.just("time"), TIME_JUMPS),
    st.tuples(st.just("ota"), ANY_DEVICE, CHANNEL, OTA_PAYLOADS, st.booleans()),
    st.tuples(st.just("stat"), ANY_DEVICE, CHANNEL, STAT_PAYLOADS),
    st.tuples(st.just("telemetry"), ANY_DEVICE, TELEMETRY_PAYLOADS),
    # The last message again: a device repeating itself, or QoS 1 delivering twice.
    st.tuples(st.just("again")),
    st.tuples(st.just("cancel"), LISTED),
    st.tuples(st.just("restart"), st.booleans()),
    st.tuples(st.just("subscribed")),
    st.tuples(st.just("topic"), topics(), payloads()),
    # A maintenance window (requests wait for it), the retry cap, failure notices.
    st.tuples(
        st.just("options"),
        st.none() | st.sampled_from([("22:00", "04:00"), ("03:00", "03:30"), ("00:00", "23:59")]),
        st.integers(1, 4),
        st.booleans(),
    ),
)


class _Errors(logging.Handler):
    """Collects the ERROR records of every logger: HA logs what escaped a callback or task."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _ota_topic(device_id: str, channel: str = CONTROL_CHANNEL) -> str:
    return f"channels/{channel}/messages/{device_id}/ota"


class TrackerRun:
    """Runs one example's steps on the loop and checks the invariants after each."""

    def __init__(
        self,
        *,
        hass: HomeAssistant,
        entry: MockConfigEntry,
        mqtt_mock: Any,
        freezer: FrozenDateTimeFactory,
        hass_storage: dict[str, Any],
        errors: _Errors,
    ) -> None:
        """Keep what the steps act on."""
        self.hass = hass
        self.entry = entry
        self.mqtt_mock = mqtt_mock
        self.freezer = freezer
        self.hass_storage = hass_storage
        self.errors = errors
        # What the broker retains on each /ota topic, as far as the steps tell.
        self.retained: dict[str, str] = {}
        self.seen_publishes = 0
        self.actions: dict[str, Callable[..., Any]] = {
            "ota": self._ota,
            "stat": self._stat,
            "telemetry": self._telemetry,
            "topic": self._topic,
            "time": self._time,
            "install": self._install,
            "cancel": self._cancel,
            "restart": self._restart,
            "subscribed": self._subscribed,
            "again": self._again,
            "echo": self._echo,
            "report": self._report,
            "clear": self._clear,
            "boot": self._boot,
            "options": self._options,
        }
        self.last_message: tuple[str, bytes, bool] | None = None

    @property
    def tracker(self) -> OtaTracker:
        """Return the entry's current tracker (a restart makes a new one)."""
        tracker: OtaTracker = self.entry.runtime_data.tracker
        return tracker

    async def run(self, steps: list[Step]) -> None:
        """Start from nothing, then run the steps, checking after each."""
        await self._reset()
        for index, step in enumerate(steps):
            await self.actions[step[0]](*step[1:])
            await self.hass.async_block_till_done()
            self._note_publishes()
            self.check(f"after step {index} {step[0]}")

    async def _reset(self) -> None:
        """Unload, forget every job and device fact, load again: a new example's world."""
        assert await self.hass.config_entries.async_unload(self.entry.entry_id)
        await self.hass.async_block_till_done()
        self.hass_storage.pop(f"{DOMAIN}.{self.entry.entry_id}.jobs", None)
        self.hass.config_entries.async_update_entry(self.entry, options={})
        assert await self.hass.config_entries.async_setup(self.entry.entry_id)
        await self.hass.async_block_till_done()
        self.retained.clear()
        self.last_message = None
        self.mqtt_mock.async_publish.reset_mock()
        self.seen_publishes = 0
        self.errors.records.clear()

    def _note_publishes(self) -> None:
        """Apply our retained publishes since the last step to the broker's state."""
        calls = self.mqtt_mock.async_publish.call_args_list
        for call in calls[self.seen_publishes :]:
            topic, payload, _qos, retain = call.args
            if retain:
                self.retained[topic] = payload
        self.seen_publishes = len(calls)

    # -- actions --------------------------------------------------------------------------

    async def _ota(self, device_id: str, channel: str, payload: Any, retain: bool) -> None:
        topic = _ota_topic(device_id, channel)
        if payload == "":
            # A clear is a retained publish (the device's own, after it applied or failed).
            self.retained[topic] = ""
        self._fire(topic, payload, retain=retain)

    async def _stat(self, device_id: str, channel: str, payload: Any) -> None:
        self._fire(f"channels/{channel}/messages/{device_id}/stat", payload)

    async def _telemetry(self, device_id: str, payload: Any) -> None:
        self._fire(f"channels/{DATA_CHANNEL}/messages/{device_id}", payload)

    async def _topic(self, topic: str, payload: Any) -> None:
        try:
            topic.encode()
        except UnicodeEncodeError:
            return  # No broker delivers a topic that is not UTF-8.
        if "+" in topic or "#" in topic or "\x00" in topic or not topic:
            return  # Not a topic anyone can publish to.
        self._fire(topic, payload)

    def _fire(self, topic: str, payload: Any, *, retain: bool = False) -> None:
        """Deliver a message as HA's MQTT client does, and remember it for `again`."""
        self.last_message = (topic, _wire(payload), retain)
        async_fire_mqtt_message(self.hass, topic, _wire(payload), retain=retain)

    def _job_file_id(self, device_id: str) -> str:
        """Return the file id of the device's job (of the first package when it has none)."""
        job = self.tracker.job(device_id)
        return job.file_id if job is not None else PACKAGE_ID

    async def _echo(self, device_id: str, retain: bool) -> None:
        """Deliver our request for the device's job, as the broker forwards or replays it."""
        self._fire(
            _ota_topic(device_id), request_payload(self._job_file_id(device_id)), retain=retain
        )

    async def _report(self, device_id: str, code: int, reason: str | None) -> None:
        """Send the device's report on its job's file."""
        self._fire(_ota_topic(device_id), report(code, self._job_file_id(device_id), reason))

    async def _clear(self, device_id: str) -> None:
        """Clear the request as the device does after it applied or failed."""
        await self._ota(device_id, CONTROL_CHANNEL, "", False)

    async def _boot(self, device_id: str, with_package: bool) -> None:
        """Send the /stat of a boot: with the commit of the job's package, or the old one."""
        job = self.tracker.job(device_id)
        commit = (
            job.sw_commit if with_package and job is not None and job.sw_commit else BOOT_COMMIT
        )
        self._fire(f"channels/{CONTROL_CHANNEL}/messages/{device_id}/stat", stat_payload(commit))

    async def _options(
        self, window: tuple[str, str] | None, retry_cap: int, notify_failures: bool
    ) -> None:
        """Change the entry's options, which the tracker reads at every use."""
        start, end = window or (None, None)
        options = {
            CONF_WINDOW_START: start,
            CONF_WINDOW_END: end,
            CONF_RETRY_CAP: retry_cap,
            CONF_NOTIFY_FAILURES: notify_failures,
        }
        self.hass.config_entries.async_update_entry(self.entry, options=options)

    async def _again(self) -> None:
        if self.last_message is not None:
            topic, payload, retain = self.last_message
            async_fire_mqtt_message(self.hass, topic, payload, retain=retain)

    async def _time(self, seconds: int) -> None:
        self.freezer.tick(timedelta(seconds=seconds))
        async_fire_time_changed(self.hass)

    async def _install(self, device_id: str, version: str, sw_commit: str | None) -> None:
        package = self.entry.runtime_data.catalogue.by_version(version)
        assert package is not None
        # A refusal the user is told about (job open, guard, hardware) is no failure.
        with contextlib.suppress(ServiceValidationError):
            await self.tracker.async_request(device_id, replace(package, sw_commit=sw_commit))

    async def _cancel(self, device_id: str) -> None:
        with contextlib.suppress(ServiceValidationError):  # No open job to cancel.
            await self.tracker.async_cancel(device_id)

    async def _restart(self, cleared_while_down: bool) -> None:
        """Stop and start the entry; the broker then replays what it retains."""
        assert await self.hass.config_entries.async_unload(self.entry.entry_id)
        await self.hass.async_block_till_done()
        if cleared_while_down:
            # The devices applied or failed and cleared their requests while HA was down.
            for topic in self.retained:
                self.retained[topic] = ""
        assert await self.hass.config_entries.async_setup(self.entry.entry_id)
        await self.hass.async_block_till_done()
        for topic, payload in self.retained.items():
            if payload and topic.startswith(f"channels/{CONTROL_CHANNEL}/"):
                async_fire_mqtt_message(self.hass, topic, payload, retain=True)

    async def _subscribed(self) -> None:
        """Tell the tracker its /ota subscription is done, as HA's MQTT does after the SUBACK."""
        async_dispatcher_send(self.hass, MQTT_PROCESSED_SUBSCRIPTIONS, [(OTA_SUBSCRIPTION, 1)])

    # -- invariants -----------------------------------------------------------------------

    def check(self, where: str) -> None:
        """Check everything a user could notice, after a step."""
        assert not self.errors.records, (
            where,
            [record.getMessage()[:500] for record in self.errors.records],
        )
        now = dt_util.utcnow()
        for device_id, entity_id in DEVICES.items():
            job = self.tracker.job(device_id)
            state = self.hass.states.get(entity_id)
            assert state is not None, (where, entity_id)
            assert state.attributes["in_progress"] is self.tracker.in_progress(device_id), where
            if job is None:
                assert "ota_state" not in state.attributes, where
                continue
            assert isinstance(job.state, JobState), where
            assert job.device_id == device_id, where
            assert (
                state.attributes["ota_state"],
                state.attributes["ota_file_id"],
                state.attributes["ota_deadline"],
            ) == (job.state.value, job.file_id, job.deadline), where
            if job.is_open:
                assert job.deadline is not None, (where, job)
                # Only a request still held for the maintenance window waits for its opening.
                held = job.state is JobState.QUEUED and job.held_until is not None
                due = datetime.fromisoformat(job.held_until if held else job.deadline)
                assert due > now - timedelta(seconds=1), (where, "deadline passed", job)
            else:
                assert job.deadline is None, (where, job)
            if job.state is not JobState.QUEUED:
                assert job.held_until is None, (where, "held after it left the queue", job)
            for old in self.tracker.history(device_id):
                if old["job_id"] != job.job_id:
                    assert old["state"] != JobState.QUEUED, (where, "two open jobs", old)
                    assert not old["awaiting_stat"], (where, "two open jobs", old)
            if job.state is not JobState.QUEUED:
                retained = self.retained.get(_ota_topic(device_id), "")
                assert not _is_request_for(retained, job.file_id), (where, "not cleared", job)


def _wire(payload: Any) -> Any:
    """Return a payload as a client can publish it: text that is not UTF-8 goes as its bytes."""
    if isinstance(payload, str):
        return payload.encode("utf-8", errors="surrogatepass")
    return bytes(payload)


def _is_request_for(payload: str, file_id: str) -> bool:
    try:
        message = parse_ota_message(payload)
    except ProtocolError:
        return False
    return message is not None and message.is_request and message.file_id == file_id


async def test_tracker_survives_arbitrary_messages(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
    hass_storage: dict[str, Any],
) -> None:
    """No sequence of messages, clock jumps, installs, cancels and restarts corrupts a job."""
    # The same moment for every run: the maintenance window makes the time of day matter, and a
    # derandomized run must replay the same examples the same way.
    freezer.move_to(FUZZ_START)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    await register(hass, "1.1.0", PACKAGE_ID)
    await register(hass, "1.2.0", SECOND_ID)
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    run = TrackerRun(
        hass=hass,
        entry=setup_integration,
        mqtt_mock=mqtt_mock,
        freezer=freezer,
        hass_storage=hass_storage,
        errors=errors,
    )
    loop = asyncio.get_running_loop()

    @fuzz_settings("tracker")
    @given(steps=st.lists(STEPS, min_size=1, max_size=40))
    # Found by the parsers' fuzz tests: values HA's Store could not write made every later
    # save fail, from a /stat or from a failure report's reason.
    @example(steps=[("stat", DEVICE_ID, CONTROL_CHANNEL, '[{"n": "sw_commit", "vs": "\\ud800"}]')])
    @example(steps=[("stat", DEVICE_ID, CONTROL_CHANNEL, '[{"n": "free_flash", "v": 1e19}]')])
    @example(
        steps=[
            ("install", DEVICE_ID, "1.1.0", None),
            ("ota", DEVICE_ID, CONTROL_CHANNEL, report(2, PACKAGE_ID, "\ud800"), False),
        ]
    )
    def fuzz(steps: list[Step]) -> None:
        asyncio.run_coroutine_threadsafe(run.run(steps), loop).result()

    try:
        await loop.run_in_executor(None, fuzz)
    finally:
        logging.getLogger().removeHandler(errors)


# -- what the tracker fuzz found, kept as plain tests -----------------------------------------


async def test_held_request_answered_anyway_gets_its_own_verify_deadline(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A device that applies a held request's file (still retained from before) is verified.

    The job kept `held_until` once applied, so its verify deadline waited for the window's
    opening (13 hours later) instead of VERIFY_WINDOW, and the entity showed it held.
    """
    freezer.move_to(dt_util.now().replace(hour=12, minute=0, second=0, microsecond=0))
    await set_options(
        hass, setup_integration, **{CONF_WINDOW_START: "01:00", CONF_WINDOW_END: "05:00"}
    )
    await register(hass)
    await setup_integration.runtime_data.tracker.async_request(
        DEVICE_ID, setup_integration.runtime_data.catalogue.by_version("1.1.0")
    )
    await hass.async_block_till_done()
    assert attributes(hass)["ota_held_until"] is not None

    async_fire_mqtt_message(hass, _ota_topic(DEVICE_ID), report(1))
    await hass.async_block_till_done()

    attrs = attributes(hass)
    assert (attrs["ota_state"], attrs["in_progress"], attrs["ota_held_until"]) == (
        "applied",
        True,
        None,
    )
    await tick(hass, freezer, VERIFY_WINDOW + timedelta(seconds=1))
    assert attributes(hass)["in_progress"] is False
    assert attributes(hass)["ota_unverified"] is True


async def test_cancelled_held_request_is_not_shown_held(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Cancelling a held request ends it; the entity no longer shows when it would have gone."""
    freezer.move_to(dt_util.now().replace(hour=12, minute=0, second=0, microsecond=0))
    await set_options(
        hass, setup_integration, **{CONF_WINDOW_START: "01:00", CONF_WINDOW_END: "05:00"}
    )
    await register(hass)
    await setup_integration.runtime_data.tracker.async_request(
        DEVICE_ID, setup_integration.runtime_data.catalogue.by_version("1.1.0")
    )
    await setup_integration.runtime_data.tracker.async_cancel(DEVICE_ID)
    await hass.async_block_till_done()

    attrs = attributes(hass)
    assert (attrs["ota_state"], attrs["ota_held_until"]) == ("cancelled", None)
