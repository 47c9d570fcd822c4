"""Adversarial tests of the OTA lifecycle (issue 3): ways a job ends in the wrong state.

Each test names one way to break the lifecycle and, in its docstring, what should happen instead.
"""

from datetime import timedelta
import json
import logging
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.persistent_notification import DOMAIN as PN_DOMAIN
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)

from custom_components.insighio_ota.const import (
    CONF_SEEN_WITHIN_HOURS,
    DOMAIN,
    EVENT_OTA_STATUS,
)
from custom_components.insighio_ota.package import PackageFormatError, check_package

from .conftest import (
    API_KEY,
    DEVICE_ID,
    DEVICE_KEY,
    PACKAGE_ID,
    ota_topic,
    stat_payload,
    stat_topic,
    ustar_package,
)
from .helpers import (
    BOOT_COMMIT,
    ENTITY_ID,
    NOTIFICATION_ID,
    OLD_ID,
    PACKAGE_COMMIT,
    attributes,
    fire,
    install,
    register,
    report,
    request_payload,
    request_with_commit,
    telemetry_payload,
    telemetry_topic,
    tick,
    tracker_of,
)

CANNOT_DOWNLOAD = "can not download"


# -- helpers ------------------------------------------------------------------------------------


def entity_state(hass: HomeAssistant) -> str:
    """Return the update entity's state."""
    state = hass.states.get(ENTITY_ID)
    assert state is not None
    return state.state


@pytest.fixture
async def queued(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> list[Any]:
    """Boot /stat, register 1.1.0 and install it; return the status events captured after."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await install(hass)
    mqtt_mock.async_publish.reset_mock()
    return async_capture_events(hass, EVENT_OTA_STATUS)


@pytest.fixture
async def queued_commit(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> list[Any]:
    """Like `queued`, for a package that names the application commit it installs."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await request_with_commit(hass, setup_integration)
    mqtt_mock.async_publish.reset_mock()
    return async_capture_events(hass, EVENT_OTA_STATUS)


# -- timeouts from the device's cadence ---------------------------------------------------------


async def test_telemetry_burst_per_wake_does_not_shrink_the_timeout(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A device waking every 12 h with 3 messages per wake must keep its request past 1 h."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    # Scheduled mode (twice a day) with a batch: each connection sends a few messages, a
    # couple of seconds apart (cellular, QoS 1), then the device sleeps for 12 hours.
    for _ in range(4):
        freezer.tick(timedelta(hours=12))
        for _ in range(3):
            await fire(hass, telemetry_topic(), telemetry_payload())
            freezer.tick(timedelta(seconds=2))
    await install(hass)

    # The device's next connection is 12 h away: an hour later the request must still wait.
    await tick(hass, freezer, timedelta(hours=2))
    assert attributes(hass)["ota_state"] == "queued"


# -- the retry counting of "can not download" ---------------------------------------------------


async def test_report_redelivered_within_one_wake_is_one_attempt(
    hass: HomeAssistant,
    queued: list[Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """Two "can not download" 3 s apart fit in one ~10 s wake: they are one attempt, not two."""
    await fire(hass, ota_topic(), report(2, reason=CANNOT_DOWNLOAD))
    await tick(hass, freezer, timedelta(seconds=3))
    await fire(hass, ota_topic(), report(2, reason=CANNOT_DOWNLOAD))

    assert attributes(hass)["ota_attempts"] == 1


async def test_clock_stepping_back_does_not_swallow_download_attempts(
    hass: HomeAssistant,
    queued: list[Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """After the clock steps back an hour (NTP), the next wake's failure still counts."""
    await fire(hass, ota_topic(), report(2, reason=CANNOT_DOWNLOAD))
    freezer.tick(timedelta(hours=-1))
    await fire(hass, ota_topic(), report(2, reason=CANNOT_DOWNLOAD))

    assert attributes(hass)["ota_attempts"] == 2


# -- reports and /stat that arrive in an odd order ----------------------------------------------


async def test_stat_with_package_commit_settles_a_queued_job(
    hass: HomeAssistant,
    queued_commit: list[Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """/stat showing the package's commit (e=1 and the clear lost in an MQTT outage) verifies."""
    await fire(hass, ota_topic(), request_payload())  # Our request sits on the broker.
    # HA's MQTT connection drops: e=1 and the device's clear are lost; the reboot's /stat is not.
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))

    await tick(hass, freezer, timedelta(hours=25))
    attrs = attributes(hass)
    assert attrs["ota_state"] == "verified", attrs["ota_reason"]


async def test_applied_report_after_cancel_records_the_installed_package(
    hass: HomeAssistant, queued: list[Any], setup_integration: MockConfigEntry
) -> None:
    """Cancel racing a device that already downloads: its e=1 still sets the installed label."""
    await fire(hass, ota_topic(), request_payload())
    await tracker_of(setup_integration).async_cancel(DEVICE_ID)
    await hass.async_block_till_done()
    # The device had read the request before the clear and applied it.
    await fire(hass, ota_topic(), report(1))

    assert attributes(hass)["installed_version"] == "1.1.0"


async def test_commit_mismatch_fires_applied_only_once(
    hass: HomeAssistant, queued_commit: list[Any]
) -> None:
    """After /stat showed other software, later boots' /stat fire no further status events."""
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload("c0ffee1"))
    assert [e.data["state"] for e in queued_commit] == ["applied", "applied"]

    # The device power-cycles twice: the same /stat, nothing new.
    await fire(hass, stat_topic(), stat_payload("c0ffee1"))
    await fire(hass, stat_topic(), stat_payload("c0ffee1"))

    assert [e.data["state"] for e in queued_commit] == ["applied", "applied"]


async def test_success_dismisses_the_earlier_failure_notification(
    hass: HomeAssistant, queued: list[Any]
) -> None:
    """A later update that is verified removes the device's stale "OTA failed" notification."""
    await fire(hass, ota_topic(), report(2, reason="can not apply"))
    assert NOTIFICATION_ID in hass.data.get(PN_DOMAIN, {})

    await install(hass)
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))

    assert attributes(hass)["ota_state"] == "verified"
    assert NOTIFICATION_ID not in hass.data.get(PN_DOMAIN, {})


# -- the catalogue changing under a job ---------------------------------------------------------


async def test_relabelled_package_mid_job_is_not_offered_again(
    hass: HomeAssistant, queued: list[Any]
) -> None:
    """A package relabelled while queued, then applied: installed shows the new label, no update."""
    await hass.services.async_call(
        DOMAIN, "update_package", {"file_id": PACKAGE_ID, "version": "1.1.1"}, blocking=True
    )
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))

    attrs = attributes(hass)
    assert attrs["latest_version"] == "1.1.1"
    assert attrs["installed_version"] == "1.1.1"
    assert entity_state(hass) == "off"


async def test_removing_the_installed_package_offers_no_downgrade(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """1.0.0 then 1.1.0 registered, 1.1.0 installed then removed: 1.0.0 is no update."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass, "1.0.0", OLD_ID)
    await register(hass, "1.1.0")
    await install(hass)
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
    assert entity_state(hass) == "off"

    await hass.services.async_call(DOMAIN, "remove_package", {"file_id": PACKAGE_ID}, blocking=True)
    await hass.async_block_till_done()

    attrs = attributes(hass)
    assert attrs["installed_version"] == "1.1.0"
    assert attrs["latest_version"] == "1.0.0"
    assert entity_state(hass) == "off"


# -- what devices (any device of the project) can make us store -------------------------------


async def test_stat_extra_records_are_bounded_in_storage(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A /stat with thousands of unknown records must not grow the stored facts without bound."""
    records = [{"vs": "x" * 100, "n": f"junk_{index}"} for index in range(5000)]
    payload = json.loads(stat_payload(BOOT_COMMIT)) + records
    await fire(hass, stat_topic(), json.dumps(payload))
    await tick(hass, freezer, timedelta(seconds=2))  # Changes are written a moment later.

    stored = hass_storage[f"{DOMAIN}.{setup_integration.entry_id}.jobs"]["data"]
    assert len(json.dumps(stored["devices"][DEVICE_ID])) < 64 * 1024


async def test_failure_reason_is_bounded(hass: HomeAssistant, queued: list[Any]) -> None:
    """A device's failure reason of a megabyte is cut before it lands in state, event and store."""
    await fire(hass, ota_topic(), report(2, reason="x" * 1_000_000))

    assert attributes(hass)["ota_state"] == "failed"
    assert len(attributes(hass)["ota_reason"]) <= 1024
    assert len(queued[-1].data["reason"]) <= 1024


# -- the package format checker -----------------------------------------------------------------


def test_directory_entry_after_a_file_of_the_same_name_refused() -> None:
    """File "apps", then directory "apps/": the device cannot make the directory; refuse it."""
    content = ustar_package({"apps": b"x = 1\n", "apps/": None, "apps/main.py": b"y = 2\n"})

    with pytest.raises(PackageFormatError):
        check_package(content, ".tar")


# -- regression guards --------------------------------------------------------------------------


async def test_lifecycle_logs_no_secret_at_debug(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Register, install, fail, cancel, time out at DEBUG: no device key or API key is logged."""
    caplog.set_level(logging.DEBUG)
    hass.config_entries.async_update_entry(setup_integration, options={CONF_SEEN_WITHIN_HOURS: 0})
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await install(hass)
    await fire(hass, ota_topic(), report(2, reason=CANNOT_DOWNLOAD))
    await tracker_of(setup_integration).async_cancel(DEVICE_ID)
    await install(hass)
    await tick(hass, freezer, timedelta(days=2))
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert DEVICE_KEY not in text
    assert API_KEY not in text
