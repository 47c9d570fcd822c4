"""The OTA state machine as a user sees it: requests, device reports, /stat, time and restarts.

Every transition of the lifecycle has a test here: queued -> applied -> verified; applied with
other software; applied but never confirmed; the failures of the real firmware (at once, or a
download retried until the cap); foreign and duplicate reports; timeouts from the device's
cadence; cancel; install guards; HA restarts (replay of the retained request, a request gone
while HA was down, late reports); job history and notifications.
"""

from datetime import timedelta
import json
import logging
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.mqtt.const import MQTT_PROCESSED_SUBSCRIPTIONS
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_mqtt_message,
    async_fire_time_changed,
)

from custom_components.insighio_ota.catalogue import Package
from custom_components.insighio_ota.const import (
    CONF_MIN_BATTERY_MV,
    CONF_NOTIFY_FAILURES,
    CONF_RETRY_CAP,
    CONF_SEEN_WITHIN_HOURS,
    CONF_TIMEOUT_WAKES,
    DOMAIN,
    EVENT_OTA_STATUS,
    JOB_HISTORY_LENGTH,
    MAX_QUEUED_TIMEOUT,
    MIN_QUEUED_TIMEOUT,
    UNKNOWN_CADENCE_TIMEOUT,
    VERIFY_WINDOW,
)
from custom_components.insighio_ota.jobs import JobState, TrackerSettings
from custom_components.insighio_ota.tracker import REPLAY_GRACE

from .conftest import (
    CONTROL_CHANNEL,
    DATA_CHANNEL,
    DEVICE_ID,
    OTHER_DEVICE_ID,
    PACKAGE_ID,
    console_device,
    ota_topic,
    stat_payload,
    stat_topic,
)
from .helpers import (
    BOOT_COMMIT,
    ENTITY_ID,
    OLD_ID,
    PACKAGE_COMMIT,
    attributes,
    fire,
    install,
    notification,
    package_size,
    publishes,
    register,
    report,
    request_payload,
    request_with_commit,
    restart,
    set_options,
    telemetry_payload,
    telemetry_topic,
    tick,
    tracker_of,
)

FOREIGN_ID = "deadbeef"
OTA_SUBSCRIPTION = f"channels/{CONTROL_CHANNEL}/messages/+/ota"


async def subscribed(hass: HomeAssistant) -> None:
    """Tell the tracker its /ota subscription is done, as HA's MQTT does on the broker's SUBACK.

    In the test harness HA's MQTT never performs the subscriptions it queues (its mocked client
    stays in its start-up cooldown), so `mqtt.async_on_subscribe_done` would never call back;
    sending the signal the real client sends after the SUBACK makes the replay check
    deterministic.
    """
    async_dispatcher_send(hass, MQTT_PROCESSED_SUBSCRIPTIONS, [(OTA_SUBSCRIPTION, 1)])
    await hass.async_block_till_done()


CLEAR = (ota_topic(), "", 1, True)


def events_states(events: list[Any]) -> list[str]:
    """Return the states of the captured status events."""
    return [event.data["state"] for event in events]


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """Count our warnings that contain `text`."""
    return sum(
        1
        for record in caplog.records
        if record.levelno == logging.WARNING
        and record.name.startswith("custom_components.insighio_ota")
        and text in record.getMessage()
    )


@pytest.fixture
async def queued(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> list[Any]:
    """Report an old version, register 1.1.0, install it; return the captured status events."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass, release_notes="Better radio")
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await install(hass)
    assert publishes(mqtt_mock)[-1] == (ota_topic(), request_payload(), 1, True)
    assert events_states(events) == ["queued"]
    mqtt_mock.async_publish.reset_mock()
    events.clear()
    return events


@pytest.fixture
async def queued_commit(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> list[Any]:
    """Like `queued`, for a package that names the application commit it installs."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await request_with_commit(hass, setup_integration)
    assert events_states(events) == ["queued"]
    mqtt_mock.async_publish.reset_mock()
    events.clear()
    return events


# -- queued -> applied -> verified -------------------------------------------------------------


async def test_request_echo_does_not_end_job(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Our own retained request coming back from the broker is not a device report."""
    # Forwarded live to us as a subscriber, so without the retain flag.
    await fire(hass, ota_topic(), request_payload())

    attrs = attributes(hass)
    assert attrs["in_progress"] is True
    assert attrs["ota_state"] == "queued"
    assert attrs["installed_version"] == "master@1a2b3c4"
    assert attrs["ota_request_gone"] is False
    assert events_states(queued) == []
    assert publishes(mqtt_mock) == []  # Not cleared: the device has yet to read it.
    assert _warnings(caplog, "") == 0  # Expected traffic, not a problem to report.


async def test_applied_then_stat_verifies(
    hass: HomeAssistant,
    queued: list[Any],
    mqtt_mock: Any,
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """e=1 installs the label and clears the request; the /stat of the reboot verifies it."""
    await fire(hass, ota_topic(), report(1))

    assert publishes(mqtt_mock) == [CLEAR]
    attrs = attributes(hass)
    assert attrs["installed_version"] == "1.1.0"
    assert attrs["in_progress"] is True  # Until the device has rebooted and said so.
    assert attrs["ota_state"] == "applied"
    assert attrs["ota_unverified"] is False
    assert attrs["ota_deadline"] is not None  # The end of the verify window.
    assert hass.states.get(ENTITY_ID).state == "off"
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, DEVICE_ID), setup_integration.entry_id
    )
    # The device page shows the new software as soon as the device said it applied it.
    assert device.sw_version == "1.1.0"
    assert events_states(queued) == ["applied"]
    assert queued[0].data == {
        "device_id": device.id,
        "insighio_device_id": DEVICE_ID,
        "file_id": PACKAGE_ID,
        "version": "1.1.0",
        "state": "applied",
        "reason": None,
    }

    # The device clears the request itself, then reboots and reports /stat.
    await fire(hass, ota_topic(), "")
    assert attributes(hass)["in_progress"] is True
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))

    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "verified"
    assert attrs["ota_deadline"] is None
    assert attrs["ota_unverified"] is False
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued) == ["applied", "verified"]
    device = device_registry.async_get(device.id)
    assert device.sw_version == "1.1.0"
    assert device.hw_version == "esp32s3"
    assert publishes(mqtt_mock) == [CLEAR]  # Nothing more to clear.


async def test_stat_with_package_commit_verifies(
    hass: HomeAssistant, queued_commit: list[Any], setup_integration: MockConfigEntry
) -> None:
    """A package that names its commit is verified by a /stat showing that commit."""
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "verified"
    assert attrs["ota_reason"] is None
    assert attrs["in_progress"] is False
    assert events_states(queued_commit) == ["applied", "verified"]
    assert tracker_of(setup_integration).job(DEVICE_ID).sw_commit == PACKAGE_COMMIT


async def test_stat_with_other_commit_stays_applied(
    hass: HomeAssistant, queued_commit: list[Any], setup_integration: MockConfigEntry
) -> None:
    """/stat with other software than the package names: applied, not verified, and why."""
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload("c0ffee1"))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "applied"
    assert attrs["in_progress"] is False  # The answer is in: no more progress.
    assert attrs["ota_unverified"] is True
    assert "c0ffee1" in attrs["ota_reason"]
    assert PACKAGE_COMMIT in attrs["ota_reason"]
    assert [(e.data["state"], e.data["reason"]) for e in queued_commit] == [
        ("applied", None),
        ("applied", attrs["ota_reason"]),
    ]
    assert notification(hass) is None  # Applied is not a failure.


async def test_duplicate_applied_changes_nothing(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any
) -> None:
    """A repeated e=1 fires no second event and publishes nothing more."""
    await fire(hass, ota_topic(), report(1))
    await fire(hass, ota_topic(), report(1))

    assert events_states(queued) == ["applied"]
    assert publishes(mqtt_mock) == [CLEAR]

    # Even after the job is verified, a late duplicate is only noise.
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    await fire(hass, ota_topic(), report(1))
    assert events_states(queued) == ["applied", "verified"]
    assert attributes(hass)["ota_state"] == "verified"
    assert publishes(mqtt_mock) == [CLEAR]


async def test_stat_never_arrives_then_late_stat_verifies(
    hass: HomeAssistant,
    queued: list[Any],
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Without /stat, progress stops when the verify window ends; a late /stat still verifies."""
    await fire(hass, ota_topic(), report(1))

    await tick(hass, freezer, VERIFY_WINDOW - timedelta(seconds=5))
    assert attributes(hass)["in_progress"] is True

    await tick(hass, freezer, timedelta(seconds=10))
    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "applied"
    assert attrs["ota_unverified"] is True
    assert attrs["ota_deadline"] is None
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued) == ["applied"]  # The window's end is not a transition.
    assert notification(hass) is None

    # Per issue 3, a /stat however late confirms the package.
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    attrs = attributes(hass)
    assert attrs["ota_state"] == "verified"
    assert attrs["ota_unverified"] is False
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued) == ["applied", "verified"]
    assert publishes(mqtt_mock) == [CLEAR]


async def test_new_install_allowed_while_unverified(
    hass: HomeAssistant, queued: list[Any], freezer: FrozenDateTimeFactory
) -> None:
    """An applied job past its window is no longer open: the next install may start."""
    await fire(hass, ota_topic(), report(1))
    await tick(hass, freezer, VERIFY_WINDOW + timedelta(seconds=1))

    await register(hass, "1.2.0", "bbbb0002")
    await install(hass)

    attrs = attributes(hass)
    assert attrs["ota_version"] == "1.2.0"
    assert attrs["ota_state"] == "queued"


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (report(2, reason="not enough space"), "not enough space"),
        (report(2, reason="can not apply"), "can not apply"),
        # The console docs' variant of the reason record.
        (
            json.dumps([{"n": "e", "v": 2}, {"n": "i", "vs": PACKAGE_ID}, {"m": "i", "vs": "X"}]),
            "X",
        ),
        (report(2), None),
    ],
)
async def test_failed_at_once(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, payload: str, reason: str | None
) -> None:
    """e=2 other than "can not download" ends the job, tells the user and clears the request."""
    await fire(hass, ota_topic(), payload)

    assert [(e.data["state"], e.data["reason"]) for e in queued] == [("failed", reason)]
    assert publishes(mqtt_mock) == [CLEAR]
    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "failed"
    assert attrs["ota_reason"] == reason
    assert attrs["ota_deadline"] is None
    assert attrs["installed_version"] == "master@1a2b3c4"
    assert hass.states.get(ENTITY_ID).state == "on"  # The update is still available.
    message = notification(hass)
    assert message is not None
    assert message["title"] == "insigh.io OTA failed"
    assert "Sensor 1" in message["message"]
    assert "1.1.0" in message["message"]
    assert PACKAGE_ID in message["message"]
    assert (reason or "no reason given") in message["message"]


async def test_not_enough_space_then_can_not_download(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any
) -> None:
    """The firmware's second report of the same wake after "not enough space" changes nothing."""
    await fire(hass, ota_topic(), report(2, reason="not enough space"))
    await fire(hass, ota_topic(), report(2, reason="can not download"))

    assert [(e.data["state"], e.data["reason"]) for e in queued] == [("failed", "not enough space")]
    attrs = attributes(hass)
    assert attrs["ota_reason"] == "not enough space"
    assert attrs["ota_attempts"] == 0
    assert publishes(mqtt_mock) == [CLEAR]


async def test_can_not_download_retried_until_cap(
    hass: HomeAssistant,
    queued: list[Any],
    mqtt_mock: Any,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Each wake's "can not download" counts once; at the default cap of 3 the job fails."""
    await fire(hass, ota_topic(), report(2, reason="can not download"))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["in_progress"] is True
    assert attrs["ota_attempts"] == 1
    assert attrs["ota_reason"] == "can not download"
    assert publishes(mqtt_mock) == []  # The device retries at its next wake.
    assert queued == []
    assert notification(hass) is None

    # The same report delivered again within 2 s is the same attempt.
    await tick(hass, freezer, timedelta(seconds=1))
    await fire(hass, ota_topic(), report(2, reason="can not download"))
    assert attributes(hass)["ota_attempts"] == 1

    # The next wake fails again.
    await tick(hass, freezer, timedelta(minutes=5))
    await fire(hass, ota_topic(), report(2, reason="can not download"))
    assert attributes(hass)["ota_attempts"] == 2
    assert attributes(hass)["ota_state"] == "queued"
    assert publishes(mqtt_mock) == []

    await tick(hass, freezer, timedelta(minutes=5))
    await fire(hass, ota_topic(), report(2, reason="can not download"))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "failed"
    assert attrs["in_progress"] is False
    assert attrs["ota_attempts"] == 3
    assert attrs["ota_reason"] == "can not download (3 attempts)"
    assert publishes(mqtt_mock) == [CLEAR]
    assert [(e.data["state"], e.data["reason"]) for e in queued] == [
        ("failed", "can not download (3 attempts)")
    ]
    assert "can not download (3 attempts)" in notification(hass)["message"]

    # A fourth report (the device woke before it saw the clear) changes nothing.
    await tick(hass, freezer, timedelta(minutes=5))
    await fire(hass, ota_topic(), report(2, reason="can not download"))
    assert attributes(hass)["ota_attempts"] == 3
    assert len(queued) == 1
    assert publishes(mqtt_mock) == [CLEAR]
    assert tracker_of(setup_integration).settings.retry_cap == 3


@pytest.mark.parametrize("cap", [1, 2])
async def test_custom_retry_cap(
    hass: HomeAssistant,
    *,
    queued: list[Any],
    mqtt_mock: Any,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    cap: int,
) -> None:
    """The retry cap is an option, read when a report arrives."""
    await set_options(hass, setup_integration, **{CONF_RETRY_CAP: cap})

    for _ in range(cap - 1):
        await fire(hass, ota_topic(), report(2, reason="can not download"))
        await tick(hass, freezer, timedelta(minutes=5))
    assert attributes(hass)["ota_state"] == "queued"

    await fire(hass, ota_topic(), report(2, reason="can not download"))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "failed"
    assert attrs["ota_attempts"] == cap
    assert attrs["ota_reason"] == f"can not download ({cap} attempts)"
    assert publishes(mqtt_mock) == [CLEAR]
    assert notification(hass) is not None


async def test_failure_without_notification(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, setup_integration: MockConfigEntry
) -> None:
    """With notifications switched off a failure still ends the job, silently."""
    await set_options(hass, setup_integration, **{CONF_NOTIFY_FAILURES: False})

    await fire(hass, ota_topic(), report(2, reason="can not apply"))

    assert attributes(hass)["ota_state"] == "failed"
    assert events_states(queued) == ["failed"]
    assert publishes(mqtt_mock) == [CLEAR]
    assert notification(hass) is None


async def test_notification_names_device_by_user_name(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """The notification uses the name the user gave the device."""
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, DEVICE_ID), setup_integration.entry_id
    )
    device_registry.async_update_device(device.id, name_by_user="Greenhouse")

    await fire(hass, ota_topic(), report(2, reason="can not apply"))

    assert "Greenhouse" in notification(hass)["message"]


async def test_foreign_report_recorded(
    hass: HomeAssistant,
    queued: list[Any],
    mqtt_mock: Any,
    setup_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A report for another file id while ours waits is kept, logged once, and ends nothing."""
    await fire(hass, ota_topic(), report(2, FOREIGN_ID, "can not apply"))
    await fire(hass, ota_topic(), report(1, FOREIGN_ID))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["in_progress"] is True
    assert attrs["installed_version"] == "master@1a2b3c4"
    assert queued == []
    assert publishes(mqtt_mock) == []  # Our request stays for the device.
    job = tracker_of(setup_integration).job(DEVICE_ID)
    assert [(r["file_id"], r["code"], r["reason"]) for r in job.foreign_reports] == [
        (FOREIGN_ID, 2, "can not apply"),
        (FOREIGN_ID, 1, None),
    ]
    assert all(r["at"] for r in job.foreign_reports)
    assert _warnings(caplog, FOREIGN_ID) == 1

    # Only the last few are kept.
    for index in range(10):
        await fire(hass, ota_topic(), report(2, f"f00d{index:04d}", "can not download"))
    kept = tracker_of(setup_integration).job(DEVICE_ID).foreign_reports
    assert [r["file_id"] for r in kept] == [f"f00d{index:04d}" for index in range(5, 10)]

    # And the job still works.
    await fire(hass, ota_topic(), report(1))
    assert attributes(hass)["ota_state"] == "applied"


async def test_foreign_request_ignored(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, setup_integration: MockConfigEntry
) -> None:
    """A retained request for another file (someone else's) is not a report."""
    await fire(hass, ota_topic(), request_payload(FOREIGN_ID))

    assert attributes(hass)["ota_state"] == "queued"
    assert tracker_of(setup_integration).job(DEVICE_ID).foreign_reports == []
    assert queued == []
    assert publishes(mqtt_mock) == []


async def test_report_without_open_job_ignored(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A report when no job waits (none ever, or ended) is logged once and recorded nowhere."""
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await fire(hass, ota_topic(), report(1))
    await fire(hass, ota_topic(), report(1))

    assert events == []
    assert tracker_of(setup_integration).job(DEVICE_ID) is None
    assert _warnings(caplog, PACKAGE_ID) == 1
    assert not any(args[0] == ota_topic() for args in publishes(mqtt_mock))


async def test_foreign_report_after_job_ended(
    hass: HomeAssistant, queued: list[Any], setup_integration: MockConfigEntry
) -> None:
    """Once the job has ended, another file's report is not recorded on it."""
    await fire(hass, ota_topic(), report(2, reason="can not apply"))
    await fire(hass, ota_topic(), report(1, FOREIGN_ID))

    assert tracker_of(setup_integration).job(DEVICE_ID).foreign_reports == []
    assert events_states(queued) == ["failed"]


async def test_unknown_code_ignored(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A code the firmware does not define leaves the job waiting."""
    await fire(hass, ota_topic(), report(7))
    await fire(hass, ota_topic(), report(7))

    assert attributes(hass)["ota_state"] == "queued"
    assert attributes(hass)["in_progress"] is True
    assert queued == []
    assert publishes(mqtt_mock) == []
    assert _warnings(caplog, "unknown code") == 1


# -- queued timeouts -------------------------------------------------------------------------


async def wake(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, interval: timedelta, times: int
) -> None:
    """Let the device send telemetry `times` times, `interval` apart."""
    for index in range(times):
        if index:
            freezer.tick(interval)
        await fire(hass, telemetry_topic(), telemetry_payload())


async def test_timeout_without_cadence(
    hass: HomeAssistant,
    queued: list[Any],
    mqtt_mock: Any,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A device whose cadence is unknown gets a day to pick the request up."""
    job = tracker_of(setup_integration).job(DEVICE_ID)
    assert dt_util.parse_datetime(job.deadline) - dt_util.parse_datetime(job.requested_at) == (
        UNKNOWN_CADENCE_TIMEOUT
    )

    await tick(hass, freezer, UNKNOWN_CADENCE_TIMEOUT - timedelta(seconds=5))
    assert attributes(hass)["ota_state"] == "queued"
    assert publishes(mqtt_mock) == []

    await tick(hass, freezer, timedelta(seconds=10))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "timed_out"
    assert attrs["in_progress"] is False
    assert attrs["ota_deadline"] is None
    assert attrs["ota_reason"] == "the device did not report in time"
    assert publishes(mqtt_mock) == [CLEAR]
    assert events_states(queued) == ["timed_out"]
    message = notification(hass)
    assert message["title"] == "insigh.io OTA timed out"

    # A failure report after the timeout changes nothing...
    await fire(hass, ota_topic(), report(2, reason="can not apply"))
    assert attributes(hass)["ota_state"] == "timed_out"
    assert events_states(queued) == ["timed_out"]
    # ...but a device that says it applied the package did: the report is the truth.
    await fire(hass, ota_topic(), report(1))
    attrs = attributes(hass)
    assert attrs["ota_state"] == "applied"
    assert attrs["ota_reason"] == "applied after the job ended timed_out"
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued) == ["timed_out", "applied"]


@pytest.mark.parametrize(
    ("interval", "options", "expected"),
    [
        # Six wakes of 20 minutes: two hours.
        (timedelta(minutes=20), {}, timedelta(hours=2)),
        # Ten wakes, by option.
        (timedelta(minutes=20), {CONF_TIMEOUT_WAKES: 10}, timedelta(minutes=200)),
        # Six wakes of a minute is less than the floor of an hour.
        (timedelta(minutes=1), {}, MIN_QUEUED_TIMEOUT),
        # Six wakes of two days is more than the ceiling of a week.
        (timedelta(days=2), {}, MAX_QUEUED_TIMEOUT),
    ],
)
async def test_timeout_from_cadence(
    hass: HomeAssistant,
    *,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
    interval: timedelta,
    options: dict[str, Any],
    expected: timedelta,
) -> None:
    """The queued timeout is N of the device's wake intervals, within [1 h, 7 days]."""
    await set_options(hass, setup_integration, **{CONF_SEEN_WITHIN_HOURS: 0, **options})
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await wake(hass, freezer, interval, 4)
    facts = tracker_of(setup_integration).facts(DEVICE_ID)
    assert facts.wake_interval == interval
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    await install(hass)

    job = tracker_of(setup_integration).job(DEVICE_ID)
    assert dt_util.parse_datetime(job.deadline) - dt_util.parse_datetime(job.requested_at) == (
        expected
    )
    await tick(hass, freezer, expected - timedelta(seconds=5))
    assert attributes(hass)["ota_state"] == "queued"

    mqtt_mock.async_publish.reset_mock()
    await tick(hass, freezer, timedelta(seconds=10))

    assert attributes(hass)["ota_state"] == "timed_out"
    assert publishes(mqtt_mock) == [CLEAR]
    assert events_states(events) == ["queued", "timed_out"]
    assert notification(hass) is not None


async def test_cadence_is_a_median(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Gaps (a missed wake, a day off) and bursts within one connection do not skew the cadence."""
    await wake(hass, freezer, timedelta(minutes=5), 4)
    freezer.tick(timedelta(hours=10))  # The device was off for a while.
    await fire(hass, telemetry_topic(), telemetry_payload())
    # A second message of the same connection is not a wake.
    freezer.tick(timedelta(milliseconds=200))
    await fire(hass, telemetry_topic(), telemetry_payload())
    await wake(hass, freezer, timedelta(minutes=5), 3)

    facts = tracker_of(setup_integration).facts(DEVICE_ID)
    assert facts.wake_interval == timedelta(minutes=5)
    assert len(facts.wake_intervals) == 6

    # Only the last samples are kept.
    await wake(hass, freezer, timedelta(minutes=7), 30)
    facts = tracker_of(setup_integration).facts(DEVICE_ID)
    assert len(facts.wake_intervals) == 15
    assert facts.wake_interval == timedelta(minutes=7)


async def test_telemetry_of_unknown_or_malformed_ignored(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Telemetry of unlisted devices, without a device, or not SenML, teaches nothing wrong."""
    tracker = tracker_of(setup_integration)
    await fire(hass, telemetry_topic(OTHER_DEVICE_ID), telemetry_payload(vbatt=3000))
    assert tracker.facts(OTHER_DEVICE_ID) is None
    await fire(hass, f"channels/{DATA_CHANNEL}/messages/", telemetry_payload())
    assert tracker.facts("") is None

    await fire(hass, telemetry_topic(), "not json")
    await fire(hass, telemetry_topic(), "not json")
    facts = tracker.facts(DEVICE_ID)
    assert facts.last_seen is not None  # The device was there, whatever it said.
    assert facts.battery_mv is None
    assert _warnings(caplog, "malformed") == 1

    for value in (True, "3700"):
        await fire(
            hass, telemetry_topic(), json.dumps([{"n": "vbatt", "v" if value else "vs": value}])
        )
    assert tracker.facts(DEVICE_ID).battery_mv is None
    await fire(hass, telemetry_topic(), telemetry_payload(vbatt=3712))
    assert tracker.facts(DEVICE_ID).battery_mv == 3712


async def test_telemetry_saved_in_batches(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    hass_storage: dict[str, Any],
) -> None:
    """What telemetry teaches is written to storage a little later, not at every message."""
    key = f"{DOMAIN}.{setup_integration.entry_id}.jobs"
    await fire(hass, telemetry_topic(), telemetry_payload(vbatt=3600))
    assert DEVICE_ID not in hass_storage.get(key, {}).get("data", {}).get("devices", {})

    await tick(hass, freezer, timedelta(seconds=31))
    assert hass_storage[key]["data"]["devices"][DEVICE_ID]["battery_mv"] == 3600


async def test_job_change_saved_soon_even_when_telemetry_follows(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    hass_storage: dict[str, Any],
) -> None:
    """A report is written a second later; telemetry right after it does not postpone that."""
    key = f"{DOMAIN}.{setup_integration.entry_id}.jobs"
    # The install's own write first: it is due a second after the fixture's /stat, by a clock
    # the test does not control, and would else take the report and leave the telemetry out.
    await tick(hass, freezer, timedelta(seconds=2))
    await fire(hass, ota_topic(), report(2, reason="can not download"))
    await fire(hass, telemetry_topic(), telemetry_payload(vbatt=3600))

    await tick(hass, freezer, timedelta(seconds=2))
    stored = hass_storage[key]["data"]
    assert stored["jobs"][DEVICE_ID]["attempts"] == 1
    assert stored["devices"][DEVICE_ID]["battery_mv"] == 3600


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_queued(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, setup_integration: MockConfigEntry
) -> None:
    """Cancel clears the request and ends the job `cancelled`, without a notification."""
    await tracker_of(setup_integration).async_cancel(DEVICE_ID)
    await hass.async_block_till_done()

    attrs = attributes(hass)
    assert attrs["ota_state"] == "cancelled"
    assert attrs["in_progress"] is False
    assert attrs["ota_reason"] == "cancelled by the user"
    assert publishes(mqtt_mock) == [CLEAR]
    assert events_states(queued) == ["cancelled"]
    assert notification(hass) is None

    # Our own clear comes back from the broker: nothing changes.
    await fire(hass, ota_topic(), "", retain=False)
    assert events_states(queued) == ["cancelled"]
    assert publishes(mqtt_mock) == [CLEAR]

    # Nothing is open any more.
    with pytest.raises(ServiceValidationError) as exc_info:
        await tracker_of(setup_integration).async_cancel(DEVICE_ID)
    assert exc_info.value.translation_domain == DOMAIN
    assert exc_info.value.translation_key == "no_open_job"
    assert exc_info.value.translation_placeholders == {"device_id": DEVICE_ID}


async def test_cancel_while_awaiting_stat(
    hass: HomeAssistant, queued: list[Any], setup_integration: MockConfigEntry
) -> None:
    """An applied job waiting for /stat is still open, so it can be cancelled."""
    await fire(hass, ota_topic(), report(1))
    await tracker_of(setup_integration).async_cancel(DEVICE_ID)
    await hass.async_block_till_done()

    assert attributes(hass)["ota_state"] == "cancelled"
    assert events_states(queued) == ["applied", "cancelled"]


async def test_cancel_without_job(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Cancel with no job at all is refused with a translated error, nothing published."""
    with pytest.raises(ServiceValidationError) as exc_info:
        await tracker_of(setup_integration).async_cancel(DEVICE_ID)

    assert exc_info.value.translation_key == "no_open_job"
    assert not any(args[0] == ota_topic() for args in publishes(mqtt_mock))


# -- guards -----------------------------------------------------------------------------------


async def test_guard_free_flash(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A package larger than the free flash of the last /stat is refused, naming both."""
    size = package_size()
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT, free_flash=size - 1))
    await register(hass)
    mqtt_mock.async_publish.reset_mock()

    with pytest.raises(ServiceValidationError) as exc_info:
        await install(hass)

    assert exc_info.value.translation_domain == DOMAIN
    assert exc_info.value.translation_key == "guard_free_flash"
    assert exc_info.value.translation_placeholders == {"free": str(size - 1), "size": str(size)}
    assert publishes(mqtt_mock) == []
    assert tracker_of(setup_integration).job(DEVICE_ID) is None

    # Exactly enough is enough.
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT, free_flash=size))
    await install(hass)
    assert attributes(hass)["ota_state"] == "queued"


async def test_guard_not_seen(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A device silent for longer than the option is refused; 0 turns the guard off."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await fire(hass, telemetry_topic(), telemetry_payload())
    last_seen = tracker_of(setup_integration).facts(DEVICE_ID).last_seen
    freezer.tick(timedelta(hours=72, seconds=1))

    with pytest.raises(ServiceValidationError) as exc_info:
        await install(hass)

    assert exc_info.value.translation_key == "guard_not_seen"
    assert exc_info.value.translation_placeholders == {"last_seen": last_seen, "hours": "72"}

    await set_options(hass, setup_integration, **{CONF_SEEN_WITHIN_HOURS: 100})
    await install(hass)
    assert attributes(hass)["ota_state"] == "queued"

    await tracker_of(setup_integration).async_cancel(DEVICE_ID)
    freezer.tick(timedelta(days=30))
    await set_options(hass, setup_integration, **{CONF_SEEN_WITHIN_HOURS: 0})
    await install(hass)
    assert attributes(hass)["ota_state"] == "queued"


async def test_guard_battery(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A battery below the option's threshold is refused; the guard is off by default."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await fire(hass, telemetry_topic(), telemetry_payload(vbatt=3300))
    assert tracker_of(setup_integration).settings.min_battery_mv == 0

    await install(hass)  # Off by default.
    await tracker_of(setup_integration).async_cancel(DEVICE_ID)

    await set_options(hass, setup_integration, **{CONF_MIN_BATTERY_MV: 3500})
    with pytest.raises(ServiceValidationError) as exc_info:
        await install(hass)
    assert exc_info.value.translation_key == "guard_battery"
    assert exc_info.value.translation_placeholders == {"battery": "3300", "minimum": "3500"}

    await fire(hass, telemetry_topic(), telemetry_payload(vbatt=3650.5))
    await install(hass)
    assert attributes(hass)["ota_state"] == "queued"


async def test_guards_pass_without_facts(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A device never heard from has no facts to refuse an install with."""
    await set_options(hass, setup_integration, **{CONF_MIN_BATTERY_MV: 3500})
    await register(hass)
    package: Package = setup_integration.runtime_data.catalogue.by_version("1.1.0")

    tracker_of(setup_integration).check_guards(DEVICE_ID, package)


def test_settings_from_options() -> None:
    """Options override the defaults; missing ones keep them."""
    assert TrackerSettings.from_options({}) == TrackerSettings()
    settings = TrackerSettings.from_options(
        {
            CONF_NOTIFY_FAILURES: False,
            CONF_RETRY_CAP: 5,
            CONF_TIMEOUT_WAKES: 4,
            CONF_SEEN_WITHIN_HOURS: 12,
            CONF_MIN_BATTERY_MV: 3400,
        }
    )
    assert settings == TrackerSettings(False, 5, 4, 12, 3400)
    assert TrackerSettings().retry_cap == 3
    assert TrackerSettings().timeout_wakes == 6


# -- restarts ---------------------------------------------------------------------------------


async def test_restart_queued_replayed(
    hass: HomeAssistant,
    *,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
    hass_storage: dict[str, Any],
) -> None:
    """After a restart the broker replays our request: still queued; a late e=1 still matches."""
    await restart(hass, setup_integration)
    assert f"{DOMAIN}.{setup_integration.entry_id}.jobs" in hass_storage
    attrs = attributes(hass)
    assert attrs["in_progress"] is True
    assert attrs["ota_state"] == "queued"
    assert attrs["installed_version"] == "master@1a2b3c4"

    await subscribed(hass)
    await fire(hass, ota_topic(), request_payload(), retain=True)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["ota_request_gone"] is False
    assert queued == []

    mqtt_mock.async_publish.reset_mock()
    await fire(hass, ota_topic(), report(1))
    assert publishes(mqtt_mock) == [CLEAR]
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    attrs = attributes(hass)
    assert attrs["ota_state"] == "verified"
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued) == ["applied", "verified"]

    # The confirmed label itself survives the next restart too.
    await restart(hass, setup_integration)
    assert attributes(hass)["installed_version"] == "1.1.0"
    assert hass.states.get(ENTITY_ID).state == "off"


async def test_restart_queued_request_gone_then_stat_shows_package(
    hass: HomeAssistant,
    queued_commit: list[Any],
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """No replay within the grace: the request went while HA was down; /stat decides: verified."""
    await restart(hass, setup_integration)
    await subscribed(hass)
    await tick(hass, freezer, REPLAY_GRACE - timedelta(seconds=1))
    assert attributes(hass)["ota_request_gone"] is False

    await tick(hass, freezer, timedelta(seconds=2))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["ota_request_gone"] is True
    assert attrs["in_progress"] is True  # The deadline still holds.
    assert queued_commit == []

    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "verified"
    assert attrs["ota_reason"] == "applied while Home Assistant was not listening"
    assert attrs["in_progress"] is False
    assert attrs["ota_deadline"] is None
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued_commit) == ["verified"]
    assert publishes(mqtt_mock) == []  # The device cleared it already.
    assert notification(hass) is None

    # The next boot with the same software keeps the label.
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    assert attributes(hass)["installed_version"] == "1.1.0"


@pytest.mark.parametrize("sw_commit", [PACKAGE_COMMIT, None])
async def test_restart_queued_request_gone_then_stat_without_package(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
    sw_commit: str | None,
) -> None:
    """A /stat without the package's commit (or a package naming none) ends the job unknown."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await request_with_commit(hass, setup_integration, sw_commit)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await restart(hass, setup_integration)
    await subscribed(hass)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    assert attributes(hass)["ota_request_gone"] is True
    mqtt_mock.async_publish.reset_mock()

    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "unknown"
    assert attrs["in_progress"] is False
    assert "does not show the package" in attrs["ota_reason"]
    assert attrs["installed_version"] == "master@1a2b3c4"
    assert publishes(mqtt_mock) == [CLEAR]
    assert events_states(events) == ["unknown"]
    assert notification(hass)["title"] == "insigh.io OTA outcome unknown"


async def test_restart_replay_check_runs_once(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Several subscription acks (a reconnect, another subscriber) start one check only."""
    await restart(hass, setup_integration)
    await subscribed(hass)
    await tick(hass, freezer, timedelta(seconds=3))
    await subscribed(hass)  # Does not push the check back.
    await tick(hass, freezer, timedelta(seconds=3))
    assert attributes(hass)["ota_request_gone"] is True

    # After the check there is nothing left to wait for, and a late replay still counts.
    await subscribed(hass)
    await fire(hass, ota_topic(), request_payload(), retain=True)
    await tick(hass, freezer, REPLAY_GRACE * 2)
    assert attributes(hass)["ota_request_gone"] is False


async def test_restart_job_ended_before_replay_check(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A job that ends during the grace is not marked gone by the check."""
    await restart(hass, setup_integration)
    await subscribed(hass)
    await tracker_of(setup_integration).async_cancel(DEVICE_ID)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "cancelled"
    assert attrs["ota_request_gone"] is False


async def test_restart_new_request_before_replay_check(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A request made right after a restart is not judged by the replay of the old one."""
    await restart(hass, setup_integration)
    await tracker_of(setup_integration).async_cancel(DEVICE_ID)
    await request_with_commit(hass, setup_integration, None)
    await subscribed(hass)  # Nothing loaded awaits a replay any more.
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["ota_request_gone"] is False


async def test_restart_unload_during_replay_grace(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Unloading while the replay check waits cancels it, and the next start checks again."""
    await restart(hass, setup_integration)
    await subscribed(hass)
    await restart(hass, setup_integration)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    assert attributes(hass)["ota_request_gone"] is False  # No subscription done yet.

    await subscribed(hass)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    assert attributes(hass)["ota_request_gone"] is True

    # A job already known gone stays so across the next restart, without a new check.
    await restart(hass, setup_integration)
    await subscribed(hass)
    assert attributes(hass)["ota_request_gone"] is True


async def test_restart_while_applied_stat_verifies(
    hass: HomeAssistant,
    queued_commit: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """HA restarted between e=1 and the /stat of the reboot: the /stat still verifies."""
    await fire(hass, ota_topic(), report(1))
    await restart(hass, setup_integration)
    await subscribed(hass)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "applied"
    assert attrs["in_progress"] is True
    assert attrs["ota_request_gone"] is False

    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    assert attributes(hass)["ota_state"] == "verified"
    assert events_states(queued_commit) == ["applied", "verified"]


async def test_applied_job_restarted_within_window(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The verify window resumes after a restart with the time it had left."""
    await fire(hass, ota_topic(), report(1))
    freezer.tick(VERIFY_WINDOW / 2)
    assert await hass.config_entries.async_reload(setup_integration.entry_id)
    await hass.async_block_till_done()
    assert attributes(hass)["in_progress"] is True

    await tick(hass, freezer, VERIFY_WINDOW / 2 + timedelta(seconds=1))
    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "applied"
    assert attrs["ota_unverified"] is True


async def test_applied_job_restarted_after_window(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """An applied job reloaded once the window has passed no longer shows progress."""
    await fire(hass, ota_topic(), report(1))
    await hass.config_entries.async_unload(setup_integration.entry_id)
    await hass.async_block_till_done()

    freezer.tick(VERIFY_WINDOW + timedelta(minutes=5))
    assert await hass.config_entries.async_setup(setup_integration.entry_id)
    await hass.async_block_till_done()
    async_fire_time_changed(hass)
    await hass.async_block_till_done()

    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "applied"
    assert attrs["installed_version"] == "1.1.0"


async def test_queued_deadline_resumed_after_restart(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The queued deadline is stored: restarted mid-way, the job times out on time."""
    deadline = attributes(hass)["ota_deadline"]
    freezer.tick(timedelta(hours=20))
    await restart(hass, setup_integration)
    assert attributes(hass)["ota_deadline"] == deadline

    await tick(hass, freezer, timedelta(hours=3, minutes=59))
    assert attributes(hass)["ota_state"] == "queued"
    mqtt_mock.async_publish.reset_mock()
    await tick(hass, freezer, timedelta(minutes=2))
    assert attributes(hass)["ota_state"] == "timed_out"
    assert publishes(mqtt_mock) == [CLEAR]


async def test_queued_deadline_passed_while_down(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A queued job whose deadline passed while HA was down times out right after setup."""
    assert await hass.config_entries.async_unload(setup_integration.entry_id)
    await hass.async_block_till_done()
    freezer.tick(UNKNOWN_CADENCE_TIMEOUT + timedelta(hours=1))
    mqtt_mock.async_publish.reset_mock()

    assert await hass.config_entries.async_setup(setup_integration.entry_id)
    await hass.async_block_till_done()
    async_fire_time_changed(hass)
    await hass.async_block_till_done()

    attrs = attributes(hass)
    assert attrs["ota_state"] == "timed_out"
    assert attrs["in_progress"] is False
    assert publishes(mqtt_mock) == [CLEAR]
    assert events_states(queued) == ["timed_out"]
    assert notification(hass) is not None


# -- the request vanishing, our own clears ---------------------------------------------------


async def test_clear_while_queued_on_broker(
    hass: HomeAssistant, queued_commit: list[Any], mqtt_mock: Any
) -> None:
    """A clear of a request seen on the broker, with no report: the next /stat decides."""
    await fire(hass, ota_topic(), request_payload())
    await fire(hass, ota_topic(), "")

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["ota_request_gone"] is True
    assert queued_commit == []
    assert publishes(mqtt_mock) == []

    # The request coming back (someone restored it) makes it pending again.
    await fire(hass, ota_topic(), request_payload())
    assert attributes(hass)["ota_request_gone"] is False
    await fire(hass, ota_topic(), "")
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    assert attributes(hass)["ota_state"] == "verified"


async def test_clear_before_request_seen_on_broker(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A clear before our request was seen on the broker again proves nothing by itself.

    HA's mocked MQTT echoes every publish, as a broker does, so the request of a new job is
    always seen; after a restart it is not until the broker replays it.
    """
    await restart(hass, setup_integration)
    await fire(hass, ota_topic(), "")

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["ota_request_gone"] is False
    assert queued == []

    # A /stat of a job whose request is not known gone settles nothing.
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    assert attributes(hass)["ota_state"] == "queued"

    # The replay check decides.
    await subscribed(hass)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    assert attributes(hass)["ota_request_gone"] is True


async def test_clear_without_job(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A clear when no job exists changes nothing."""
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await fire(hass, ota_topic(), "")

    assert events == []
    assert tracker_of(setup_integration).job(DEVICE_ID) is None


async def test_own_clear_echo_after_end(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any
) -> None:
    """The echo of the clear we published at the end of a job changes nothing."""
    await fire(hass, ota_topic(), request_payload())
    await fire(hass, ota_topic(), report(2, reason="can not apply"))
    await fire(hass, ota_topic(), "")

    attrs = attributes(hass)
    assert attrs["ota_state"] == "failed"
    assert attrs["ota_request_gone"] is False
    assert events_states(queued) == ["failed"]
    assert publishes(mqtt_mock) == [CLEAR]


# -- history ----------------------------------------------------------------------------------


async def test_history_keeps_last_jobs(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """Each job appears once in the device's history, with its newest state; 20 are kept."""
    tracker = tracker_of(setup_integration)
    first = tracker.job(DEVICE_ID).job_id
    assert [job["state"] for job in tracker.history(DEVICE_ID)] == ["queued"]
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    history = tracker.history(DEVICE_ID)
    assert [(job["job_id"], job["state"]) for job in history] == [(first, "verified")]

    for _ in range(JOB_HISTORY_LENGTH):
        await request_with_commit(hass, setup_integration, None)
        await tracker.async_cancel(DEVICE_ID)
    await hass.async_block_till_done()

    history = tracker.history(DEVICE_ID)
    assert len(history) == JOB_HISTORY_LENGTH
    assert first not in [job["job_id"] for job in history]
    assert len({job["job_id"] for job in history}) == JOB_HISTORY_LENGTH
    assert {job["state"] for job in history} == {"cancelled"}
    assert history[-1]["job_id"] == tracker.job(DEVICE_ID).job_id  # Oldest first.
    assert tracker.history(OTHER_DEVICE_ID) == []

    # History survives a restart.
    await restart(hass, setup_integration)
    assert tracker_of(setup_integration).history(DEVICE_ID) == history


# -- one job per device, installs --------------------------------------------------------------


async def test_second_install_refused_while_open(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, setup_integration: MockConfigEntry
) -> None:
    """One job per device: HA's service and our tracker both refuse a second request."""
    await register(hass, "1.2.0", "bbbb0002")

    with pytest.raises(HomeAssistantError) as exc_info:
        await install(hass)
    assert exc_info.value.translation_key == "update_in_progress"

    tracker = tracker_of(setup_integration)
    package = setup_integration.runtime_data.catalogue.by_version("1.2.0")
    with pytest.raises(HomeAssistantError) as exc_info:
        await tracker.async_request(DEVICE_ID, package)
    assert exc_info.value.translation_key == "job_open"
    assert exc_info.value.translation_placeholders == {"version": "1.1.0"}

    assert publishes(mqtt_mock) == []
    assert attributes(hass)["ota_version"] == "1.1.0"

    # Still refused while the applied job waits for /stat.
    await fire(hass, ota_topic(), report(1))
    with pytest.raises(HomeAssistantError, match=r"1\.1\.0"):
        await tracker.async_request(DEVICE_ID, package)


async def test_new_install_after_failure(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any
) -> None:
    """A failed job does not block the next attempt, which starts its own count."""
    await fire(hass, ota_topic(), report(2, reason="can not apply"))
    mqtt_mock.async_publish.reset_mock()

    await install(hass)

    assert publishes(mqtt_mock) == [(ota_topic(), request_payload(), 1, True)]
    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["ota_reason"] is None
    assert attrs["ota_attempts"] == 0
    assert events_states(queued) == ["failed", "queued"]


async def test_install_unknown_version(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A version no package carries is refused with a translated error, nothing published."""
    await fire(hass, stat_topic(), stat_payload())
    await register(hass)
    mqtt_mock.async_publish.reset_mock()

    # A wrong input, not an internal error: the REST API answers 400, not 500.
    with pytest.raises(ServiceValidationError) as exc_info:
        await install(hass, "9.9.9")

    assert exc_info.value.translation_domain == DOMAIN
    assert exc_info.value.translation_key == "unknown_version"
    assert publishes(mqtt_mock) == []
    assert attributes(hass)["in_progress"] is False


async def test_install_without_packages(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Without a registered package there is nothing to install."""
    await fire(hass, stat_topic(), stat_payload())
    entity = hass.data["entity_components"]["update"].get_entity(ENTITY_ID)

    with pytest.raises(HomeAssistantError) as exc_info:
        await entity.async_install(None, backup=False)

    assert exc_info.value.translation_key == "unknown_version"
    assert not any(args[0] == ota_topic() for args in publishes(mqtt_mock))


async def test_install_specific_older_version(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Installing a named older version (a rollback) publishes that package."""
    await fire(hass, stat_topic(), stat_payload())
    await register(hass, "1.0.0", OLD_ID)
    await register(hass, "1.1.0")
    mqtt_mock.async_publish.reset_mock()

    await install(hass, "1.0.0")

    assert publishes(mqtt_mock) == [
        (ota_topic(), request_payload(OLD_ID), 1, True),
    ]
    assert attributes(hass)["ota_version"] == "1.0.0"

    await fire(hass, ota_topic(), report(1, OLD_ID))
    await fire(hass, stat_topic(), stat_payload("0000001"))
    attrs = attributes(hass)
    assert attrs["installed_version"] == "1.0.0"
    assert hass.states.get(ENTITY_ID).state == "on"  # 1.1.0 is newer.


async def test_publish_failure(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """When MQTT cannot publish the request, the user is told and no job is opened."""
    await fire(hass, stat_topic(), stat_payload())
    await register(hass)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    mqtt_mock.async_publish.side_effect = HomeAssistantError("not connected")

    with pytest.raises(HomeAssistantError) as exc_info:
        await install(hass)

    assert exc_info.value.translation_key == "publish_failed"
    assert exc_info.value.translation_placeholders == {"error": "not connected"}
    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert "ota_state" not in attrs
    assert events == []

    # Once MQTT is back, the install works.
    mqtt_mock.async_publish.side_effect = None
    await install(hass)
    assert attributes(hass)["ota_state"] == "queued"


async def test_clear_failure_is_logged(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """If the clear cannot be published the job still moves on, with a warning."""
    mqtt_mock.async_publish.side_effect = HomeAssistantError("not connected")

    await fire(hass, ota_topic(), report(1))

    assert attributes(hass)["ota_state"] == "applied"
    assert events_states(queued) == ["applied"]
    assert _warnings(caplog, f"Could not publish on {ota_topic()}") == 1


async def test_package_type_and_size_in_request(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """The request carries the type and the exact size measured at registration."""
    await fire(hass, stat_topic(), stat_payload())
    await register(hass)
    package: Package = setup_integration.runtime_data.catalogue.by_version("1.1.0")
    mqtt_mock.async_publish.reset_mock()

    await install(hass, "1.1.0")

    [(topic, payload, qos, retain)] = publishes(mqtt_mock)
    assert (topic, qos, retain) == (ota_topic(), 1, True)
    records = {record["n"]: record for record in json.loads(payload)}
    assert records["e"] == {"n": "e", "v": 0}
    assert isinstance(records["e"]["v"], int)
    assert records["s"]["v"] == package.size == package_size()
    assert records["t"]["vs"] == ".tar"
    job = tracker_of(setup_integration).job(DEVICE_ID)
    assert (job.file_id, job.file_type, job.size, job.state) == (
        PACKAGE_ID,
        ".tar",
        package_size(),
        JobState.QUEUED,
    )


# -- the update entity: versions in registration order, release notes -------------------------


async def test_version_order_is_registration_order(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """'10.0' registered after '2.0' is newer; labels are never compared as strings."""
    await register(hass, "2.0", "aaaa0002")
    await fire(hass, stat_topic(), stat_payload())
    # A device on software no package names: any registered package is an update.
    assert hass.states.get(ENTITY_ID).state == "on"

    await install(hass)
    await fire(hass, ota_topic(), report(1, "aaaa0002"))
    await fire(hass, stat_topic(), stat_payload("2222222"))
    assert hass.states.get(ENTITY_ID).state == "off"

    await register(hass, "10.0", "aaaa0010")
    state = hass.states.get(ENTITY_ID)
    assert state.attributes["latest_version"] == "10.0"
    assert state.state == "on"

    await install(hass)
    await fire(hass, ota_topic(), report(1, "aaaa0010"))
    await fire(hass, stat_topic(), stat_payload("1010101"))
    assert hass.states.get(ENTITY_ID).state == "off"

    # Registered in the other order, "1.9" after "10.0" is the newest.
    await register(hass, "1.9", "aaaa0019")
    assert hass.states.get(ENTITY_ID).state == "on"


async def test_version_is_newer_directly(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """An unknown latest label is never newer; an unknown installed one is always older."""
    await register(hass, "2.0", "aaaa0002")
    await register(hass, "10.0", "aaaa0010")
    entity = hass.data["entity_components"]["update"].get_entity(ENTITY_ID)

    assert entity.version_is_newer("10.0", "2.0") is True
    assert entity.version_is_newer("2.0", "10.0") is False
    assert entity.version_is_newer("10.0", "master@1a2b3c4") is True
    assert entity.version_is_newer("3.0", "2.0") is False


async def test_release_notes(
    hass: HomeAssistant, setup_integration: MockConfigEntry, hass_ws_client: Any
) -> None:
    """The latest package's notes are the release notes; their first line the summary."""
    await fire(hass, stat_topic(), stat_payload())
    client = await hass_ws_client(hass)

    await client.send_json_auto_id({"type": "update/release_notes", "entity_id": ENTITY_ID})
    assert (await client.receive_json())["result"] is None
    assert attributes(hass)["release_summary"] is None

    notes = "\n  Faster uplink\n\n- fixes the modem reset\n- " + "x" * 300
    await register(hass, release_notes=notes)
    await client.send_json_auto_id({"type": "update/release_notes", "entity_id": ENTITY_ID})
    assert (await client.receive_json())["result"] == notes
    assert attributes(hass)["release_summary"] == "Faster uplink"

    await register(hass, "1.2.0", "bbbb0002", release_notes="y" * 400)
    assert attributes(hass)["release_summary"] == "y" * 255

    await register(hass, "1.3.0", "cccc0003")
    assert attributes(hass)["release_summary"] is None


# -- /stat and the device registry -------------------------------------------------------------


async def test_software_changed_outside_ha_drops_label(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """After a confirmed package, /stat with other software means the label no longer applies."""
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    # Another boot with the same software keeps the label.
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    assert attributes(hass)["installed_version"] == "1.1.0"

    await fire(hass, stat_topic(), stat_payload("c0ffee1", hw_version="esp32wroom"))

    attrs = attributes(hass)
    assert attrs["installed_version"] == "master@c0ffee1"
    assert hass.states.get(ENTITY_ID).state == "on"
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, DEVICE_ID), setup_integration.entry_id
    )
    assert device.sw_version == "master@c0ffee1"
    assert device.hw_version == "esp32wroom"


async def test_device_registry_follows_stat(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """The device page shows the software and hardware the device last reported."""
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, DEVICE_ID), setup_integration.entry_id
    )
    assert device.sw_version is None

    await fire(hass, stat_topic(), stat_payload("1a2b3c4"))
    device = device_registry.async_get(device.id)
    assert device.sw_version == "master@1a2b3c4"
    assert device.hw_version == "esp32s3"

    await fire(hass, stat_topic(), stat_payload("5e6f7a8", hw_version="esp32s2"))
    device = device_registry.async_get(device.id)
    assert device.sw_version == "master@5e6f7a8"
    assert device.hw_version == "esp32s2"

    # After a restart the entity describes the device from the stored /stat.
    assert await hass.config_entries.async_reload(setup_integration.entry_id)
    await hass.async_block_till_done()
    device = device_registry.async_get(device.id)
    assert device.sw_version == "master@5e6f7a8"
    assert device.serial_number == "240ac4542f45"


async def test_device_without_registry_entry(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """With its HA device removed, a job still ends; the event and notification use the id."""
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, DEVICE_ID), setup_integration.entry_id
    )
    device_registry.async_remove_device(device.id)
    await hass.async_block_till_done()

    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await fire(hass, ota_topic(), report(2, reason="can not apply"))

    assert queued[-1].data["device_id"] is None
    assert queued[-1].data["state"] == "failed"
    assert DEVICE_ID in notification(hass)["message"]


async def test_stat_without_commit(hass: HomeAssistant, setup_integration: MockConfigEntry) -> None:
    """A /stat without sw_commit says nothing about the version."""
    await fire(hass, stat_topic(), json.dumps([{"n": "hw_version", "vs": "esp32"}]))

    assert attributes(hass)["installed_version"] is None
    assert hass.states.get(ENTITY_ID).state == "unknown"
    assert tracker_of(setup_integration).installed_version(OTHER_DEVICE_ID) is None
    assert tracker_of(setup_integration).stat(OTHER_DEVICE_ID) is None


# -- noise ------------------------------------------------------------------------------------


async def test_report_from_unlisted_device_ignored(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Any device of the project can write on the channel; unlisted ones are ignored."""
    await fire(hass, ota_topic(OTHER_DEVICE_ID), report(1))
    await fire(hass, ota_topic(OTHER_DEVICE_ID), report(1))
    await fire(hass, stat_topic(OTHER_DEVICE_ID), stat_payload())

    assert attributes(hass)["ota_state"] == "queued"
    assert queued == []
    assert publishes(mqtt_mock) == []
    assert _warnings(caplog, OTHER_DEVICE_ID) == 1
    assert hass.states.get("update.sensor_2_firmware") is None


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "{}",
        json.dumps([{"n": "e", "v": 1}]),  # no file id
        json.dumps([{"n": "i", "vs": PACKAGE_ID}]),  # no code
        json.dumps([{"n": "e", "v": 1.5}, {"n": "i", "vs": PACKAGE_ID}]),
    ],
)
async def test_malformed_ota_ignored(
    hass: HomeAssistant,
    queued: list[Any],
    mqtt_mock: Any,
    caplog: pytest.LogCaptureFixture,
    payload: str,
) -> None:
    """A payload that is not a report is ignored, with one warning however often it comes."""
    async_fire_mqtt_message(hass, ota_topic(), payload)
    async_fire_mqtt_message(hass, ota_topic(), payload)
    await hass.async_block_till_done()

    assert attributes(hass)["ota_state"] == "queued"
    assert queued == []
    assert publishes(mqtt_mock) == []
    assert _warnings(caplog, "malformed") == 1

    # The job still works afterwards.
    await fire(hass, ota_topic(), report(1))
    assert attributes(hass)["ota_state"] == "applied"


@pytest.mark.parametrize("payload", ["garbage", "[]", json.dumps([{"n": "free_flash", "v": 1.5}])])
async def test_malformed_stat_ignored(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
    payload: str,
) -> None:
    """A broken /stat neither changes the versions shown nor raises."""
    await fire(hass, stat_topic(), stat_payload("1a2b3c4"))
    await fire(hass, stat_topic(), payload)
    await fire(hass, stat_topic(), payload)

    assert attributes(hass)["installed_version"] == "master@1a2b3c4"
    assert _warnings(caplog, "malformed") == 1


async def test_message_without_device_id_ignored(
    hass: HomeAssistant, queued: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A topic with an empty device level matches the wildcard but names no device."""
    topic = f"channels/{CONTROL_CHANNEL}/messages//ota"
    await fire(hass, topic, report(1))
    await fire(hass, topic, report(1))

    assert attributes(hass)["ota_state"] == "queued"
    assert queued == []
    assert _warnings(caplog, "not a device control topic") == 1


async def test_log_memory_is_bounded(
    hass: HomeAssistant, setup_integration: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """What was already logged is forgotten past a cap, so a noisy broker cannot grow memory."""
    with patch("custom_components.insighio_ota.tracker.MAX_LOGGED_KEYS", 2):
        for device_id in ("d-1", "d-2", "d-1", "d-3", "d-1"):
            await fire(hass, stat_topic(device_id), stat_payload())

    # d-1 warned, d-2 warned, d-1 repeated (debug), d-3 warned after the memory was reset,
    # so d-1 warns again.
    assert _warnings(caplog, "which the console does not list") == 4


# -- what the broker or the console may throw at the tracker ----------------------------------

OTHER_CONTROL_CHANNEL = "c1c1c1c1-0000-4000-8000-000000000003"
OTHER_DATA_CHANNEL = "d1d1d1d1-0000-4000-8000-000000000004"


def _two_projects() -> list[dict[str, Any]]:
    """Our device, and another in another project (its own data and control channels)."""
    other = console_device(OTHER_DEVICE_ID, "Sensor 2", key="b8b8b8b8-dead-4bee-8f00-0000000000ee")
    other["metadata"] = {
        "dataChannel": OTHER_DATA_CHANNEL,
        "controlChannel": OTHER_CONTROL_CHANNEL,
    }
    return [console_device(DEVICE_ID, "Sensor 1"), other]


@pytest.mark.parametrize("console_devices", [_two_projects()])
async def test_messages_on_another_projects_channels_ignored(
    hass: HomeAssistant, queued: list[Any], setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Any device of another project can write our device's topics there: not our device's."""
    forged_ota = f"channels/{OTHER_CONTROL_CHANNEL}/messages/{DEVICE_ID}/ota"
    await fire(hass, forged_ota, report(1))
    await fire(hass, f"channels/{OTHER_CONTROL_CHANNEL}/messages/{DEVICE_ID}/stat", stat_payload())
    last_seen = tracker_of(setup_integration).facts(DEVICE_ID).last_seen
    await fire(hass, f"channels/{OTHER_DATA_CHANNEL}/messages/{DEVICE_ID}", telemetry_payload())

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["installed_version"] == "master@1a2b3c4"
    assert tracker_of(setup_integration).facts(DEVICE_ID).last_seen == last_seen
    assert queued == []
    assert publishes(mqtt_mock) == []


@pytest.mark.parametrize(
    "console_devices",
    [
        [
            console_device(DEVICE_ID, "Sensor 1"),
            {
                "id": OTHER_DEVICE_ID,
                "name": "Odd",
                "key": "b8b8b8b8-dead-4bee-8f00-0000000000ee",
                "metadata": {"dataChannel": "bad+data", "controlChannel": "bad/channel"},
            },
        ]
    ],
)
async def test_channel_no_topic_can_name_is_skipped(
    hass: HomeAssistant, queued: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A console channel id that cannot be part of a topic is not followed; the rest works."""
    warnings = [
        record.getMessage()
        for record in caplog.get_records("setup")
        if "Not following a console channel" in record.getMessage()
    ]
    assert len(warnings) == 2
    assert any("bad/channel" in warning for warning in warnings)
    assert any("bad+data" in warning for warning in warnings)

    await fire(hass, ota_topic(), report(1))
    assert attributes(hass)["ota_state"] == "applied"


@pytest.fixture
def stored_jobs(
    hass_storage: dict[str, Any], config_entry: MockConfigEntry, request: pytest.FixtureRequest
) -> None:
    """Put the test's parameter in the tracker's storage before the entry is set up."""
    hass_storage[f"{DOMAIN}.{config_entry.entry_id}.jobs"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{config_entry.entry_id}.jobs",
        "data": request.param,
    }


@pytest.mark.parametrize(
    "stored_jobs",
    [
        {
            "jobs": {DEVICE_ID: {"state": "queued"}, OTHER_DEVICE_ID: {"state": "lost"}},
            "devices": {DEVICE_ID: {"no_such_fact": 1}},
        },
        {"jobs": ["not", "a", "mapping"], "devices": "nor this"},
        ["not", "a", "mapping"],
    ],
    indirect=True,
)
async def test_unreadable_storage_dropped(
    hass: HomeAssistant,
    stored_jobs: None,
    setup_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Damaged stored records are dropped (with a warning); the entry still works."""
    tracker = tracker_of(setup_integration)
    assert tracker.job(DEVICE_ID) is None
    assert tracker.facts(DEVICE_ID) is None

    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await install(hass)
    assert attributes(hass)["ota_state"] == "queued"


async def test_publish_failure_keeps_previous_job(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, setup_integration: MockConfigEntry
) -> None:
    """A request that cannot be published leaves the device's last job as it was."""
    await fire(hass, ota_topic(), report(2, reason="can not apply"))
    previous = tracker_of(setup_integration).job(DEVICE_ID)
    mqtt_mock.async_publish.side_effect = HomeAssistantError("not connected")

    with pytest.raises(HomeAssistantError):
        await install(hass)

    assert tracker_of(setup_integration).job(DEVICE_ID) is previous
    assert attributes(hass)["ota_state"] == "failed"
    assert events_states(queued) == ["failed"]


async def test_replayed_request_of_answered_job_cleared_again(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, setup_integration: MockConfigEntry
) -> None:
    """The broker still holding the request of an ended job: clear it again, change nothing."""
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    mqtt_mock.async_publish.reset_mock()

    # Our request's own (live) echo, late: not retained, nothing to do.
    await fire(hass, ota_topic(), request_payload())
    assert publishes(mqtt_mock) == []

    # After a restart the broker replays it: our clear did not stick.
    await restart(hass, setup_integration)
    mqtt_mock.async_publish.reset_mock()
    await fire(hass, ota_topic(), request_payload(), retain=True)

    assert publishes(mqtt_mock) == [CLEAR]
    assert attributes(hass)["ota_state"] == "verified"
    assert events_states(queued) == ["applied", "verified"]


async def test_device_cancel_report(hass: HomeAssistant, queued: list[Any], mqtt_mock: Any) -> None:
    """e=3 (defined by the firmware, never seen sent) ends the job cancelled."""
    await fire(hass, ota_topic(), report(3))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "cancelled"
    assert attrs["ota_reason"] == "cancelled by the device"
    assert publishes(mqtt_mock) == [CLEAR]
    assert events_states(queued) == ["cancelled"]
    assert notification(hass) is None


async def test_late_deadline_of_ended_job_changes_nothing(
    hass: HomeAssistant, queued: list[Any], setup_integration: MockConfigEntry
) -> None:
    """A deadline that fires as the job ends (same loop turn) leaves the ended job alone."""
    tracker = tracker_of(setup_integration)
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    job = tracker.job(DEVICE_ID)

    await tracker._async_deadline_reached(job)  # The race, made deterministic.

    assert job.state is JobState.VERIFIED
    assert events_states(queued) == ["applied", "verified"]


def _first_release_job(state: str, awaiting_stat: bool) -> dict[str, Any]:
    """Return a job as the first release stored it: no id, type, size or deadline."""
    return {
        "device_id": DEVICE_ID,
        "control_channel": CONTROL_CHANNEL,
        "file_id": PACKAGE_ID,
        "version": "1.1.0",
        "state": state,
        "requested_at": "2026-12-01T10:00:00+00:00",
        "updated_at": "2026-12-01T10:00:00+00:00",
        "reason": None,
        "on_broker": True,
        "awaiting_stat": awaiting_stat,
    }


@pytest.mark.parametrize(
    "stored_jobs",
    [{"jobs": {DEVICE_ID: _first_release_job("queued", False)}, "devices": {}}],
    indirect=True,
)
async def test_first_release_queued_job_gets_deadline(
    hass: HomeAssistant,
    stored_jobs: None,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A queued job stored without a deadline still ends: it is given a day from now."""
    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["in_progress"] is True
    assert attrs["ota_deadline"] is not None

    await tick(hass, freezer, UNKNOWN_CADENCE_TIMEOUT + timedelta(seconds=1))

    assert attributes(hass)["ota_state"] == "timed_out"
    assert CLEAR in publishes(mqtt_mock)


@pytest.mark.parametrize(
    "stored_jobs",
    [{"jobs": {DEVICE_ID: _first_release_job("applied", True)}, "devices": {}}],
    indirect=True,
)
async def test_first_release_applied_job_gets_deadline(
    hass: HomeAssistant,
    stored_jobs: None,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """An applied job stored without a deadline stops showing progress after the window."""
    assert attributes(hass)["in_progress"] is True

    await tick(hass, freezer, VERIFY_WINDOW + timedelta(seconds=1))

    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_unverified"] is True
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    assert attributes(hass)["ota_state"] == "verified"


async def test_request_gone_and_no_stat_until_the_deadline_is_unknown(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A vanished request and no /stat before the deadline: unknown, not a device that slept."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await request_with_commit(hass, setup_integration, PACKAGE_COMMIT)
    await restart(hass, setup_integration)
    await subscribed(hass)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    assert attributes(hass)["ota_request_gone"] is True

    await tick(hass, freezer, UNKNOWN_CADENCE_TIMEOUT)

    attrs = attributes(hass)
    assert attrs["ota_state"] == "unknown"
    assert "no /stat arrived in time" in attrs["ota_reason"]
    assert attrs["in_progress"] is False


async def test_job_listeners_follow_every_change(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Other parts (rollouts) see each change of a job, and can stop listening."""
    seen: list[str] = []
    tracker = setup_integration.runtime_data.tracker
    stop = tracker.async_add_job_listener(lambda job: seen.append(job.state.value))
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await install(hass)
    await fire(hass, ota_topic(), report(1))
    stop()
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))

    assert seen == ["queued", "applied"]
