"""Every way an OTA job can end, end to end: a real Mosquitto, simulated devices, HA's real MQTT.

Each test sets the integration up through its config flow against the console stand-in, then lets
simulated devices (which behave like the insighioNode 4.1.0 firmware) act on the retained request.
Devices wake every second or so, so each path takes seconds; only the never-waking device needs
time moved forward, and only HA's clock is moved for it.
"""

from datetime import timedelta
import json
from pathlib import Path
from typing import Any

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.insighio_ota.catalogue import Package
from custom_components.insighio_ota.const import DOMAIN, EVENT_OTA_STATUS
from custom_components.insighio_ota.jobs import JobState, OtaJob
from simulator.identities import INITIAL_SW_COMMIT
from simulator.packages import PackageFormat, write_package

from .conftest import (
    SetupIntegration,
    Simulator,
    StartSimulator,
    retained_on,
    stop_process,
    wait_for,
    wait_for_our_subscriptions,
)
from .helpers import (
    entity_id_of,
    ota_topic,
    shown,
    start_console,
    start_devices,
    states,
)

FILE_ID = "4f1c2a9e"
NEW_COMMIT = "9c8d7e6"


# -- helpers ---------------------------------------------------------------------------------


def _job(entry: MockConfigEntry, device_id: str) -> OtaJob | None:
    # Read through the entry every time: a reload replaces the tracker.
    job: OtaJob | None = entry.runtime_data.tracker.job(device_id)
    return job


def _job_state(entry: MockConfigEntry, device_id: str) -> JobState | None:
    job = _job(entry, device_id)
    return job.state if job is not None else None


def _existing_job(entry: MockConfigEntry, device_id: str) -> OtaJob:
    """Return the device's job, which must exist."""
    job = _job(entry, device_id)
    assert job is not None
    return job


async def _wait_on_broker(
    entry: MockConfigEntry, device_id: str, what: str = "the broker to echo the request"
) -> None:
    """Wait until the broker echoed (or replayed) the device's retained request to us."""
    await wait_for(lambda: (job := _job(entry, device_id)) is not None and job.on_broker, 10, what)


async def _register(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    file_id: str,
    version: str,
    *,
    file_type: str = ".tar",
    sw_commit: str | None = None,
) -> Package:
    """Register a console package; give it the commit it installs when asked to."""
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": file_id, "file_type": file_type, "version": version},
        blocking=True,
    )
    catalogue = entry.runtime_data.catalogue
    package: Package | None = catalogue.by_file_id(file_id)
    assert package is not None
    if sw_commit is not None and package.sw_commit != sw_commit:
        # register_package does not take the commit the package installs: the catalogue does.
        package = await catalogue.async_update(file_id, sw_commit=sw_commit)
    assert package is not None
    return package


async def _wait_for_wakes(entry: MockConfigEntry, device_id: str, wakes: int) -> None:
    """Wait until the device has woken `wakes` more times (each wake's telemetry tells)."""
    seen: list[str | None] = []

    def _woke_enough() -> bool:
        facts = entry.runtime_data.tracker.facts(device_id)
        last_seen = facts.last_seen if facts is not None else None
        if not seen or seen[-1] != last_seen:
            seen.append(last_seen)
        return len(seen) > wakes

    await wait_for(_woke_enough, 5 * wakes + 5, f"{wakes} more wakes")


async def _install(hass: HomeAssistant, entity_id: str) -> None:
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)


async def _restart_entry(hass: HomeAssistant, entry: MockConfigEntry, console: Simulator) -> None:
    """Unload and set up the entry again, as an HA restart does; storage survives in the harness."""
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await wait_for_our_subscriptions(hass, console)


async def _publish_report(
    hass: HomeAssistant, topic: str, code: int, file_id: str, reason: str | None = None
) -> None:
    """Publish a status report the way the firmware encodes it (value before name)."""
    records: list[dict[str, Any]] = [{"v": code, "n": "e"}, {"vs": file_id, "n": "i"}]
    if reason is not None:
        records.append({"vs": reason, "n": "m"})
    await mqtt.async_publish(hass, topic, json.dumps(records, separators=(",", ":")), qos=1)


async def _setup(
    hass: HomeAssistant,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    *,
    fmt: PackageFormat = "ustar",
    sw_commit: str | None = NEW_COMMIT,
) -> tuple[Simulator, MockConfigEntry, str, str]:
    """Write a package, start the console and set the integration up; return the pieces."""
    write_package(packages_dir, FILE_ID, fmt, sw_commit=sw_commit)
    console, entry = await start_console(simulators, setup_through_config_flow, packages_dir)
    device_id = console.devices[0]["id"]
    return console, entry, device_id, entity_id_of(hass, device_id)


# -- success ---------------------------------------------------------------------------------


async def test_success_verified_by_stat(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """The device applies, reboots, and its /stat shows the package's commit: verified."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    package = await _register(hass, entry, FILE_ID, "1.1.0", sw_commit=NEW_COMMIT)
    assert package.sw_commit == NEW_COMMIT
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await start_devices(simulators, mosquitto, console)
    tracker = entry.runtime_data.tracker
    await wait_for(lambda: tracker.stat(device_id) is not None, 15, "the device's boot /stat")
    assert tracker.stat(device_id).sw_commit == INITIAL_SW_COMMIT

    await _install(hass, entity_id)
    assert hass.states.get(entity_id).attributes["in_progress"] is True
    await wait_for(
        lambda: shown(hass, entity_id, JobState.VERIFIED),
        20,
        "the device to apply the package and its /stat to verify it",
    )

    job = _existing_job(entry, device_id)
    assert job.sw_commit == NEW_COMMIT
    assert job.reason is None
    assert tracker.stat(device_id).sw_commit == NEW_COMMIT
    assert states(events) == ["queued", "applied", "verified"]
    state = hass.states.get(entity_id)
    assert state.attributes["in_progress"] is False
    assert state.attributes["installed_version"] == "1.1.0"
    device = dr.async_get(hass).async_get_device_by_identifier((DOMAIN, device_id), entry.entry_id)
    assert device is not None
    assert device.sw_version == "1.1.0"
    assert await retained_on(hass, ota_topic(console, device_id)) == []


# -- failures --------------------------------------------------------------------------------


async def test_not_enough_space(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """Too little flash: one failed job; the second report of the same wake changes nothing."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    package = await _register(hass, entry, FILE_ID, "1.1.0")
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    # Installed before the device's first /stat: with its free flash known, the install guard
    # would refuse the package before the device could.
    await _install(hass, entity_id)
    await start_devices(simulators, mosquitto, console, "--free-flash", str(package.size // 2))

    await wait_for(lambda: shown(hass, entity_id, JobState.FAILED), 15, "the failure report")
    # The firmware follows "not enough space" with "can not download" in the same wake, and
    # retries at every wake until the request is cleared: give it wakes to do so.
    tracker = entry.runtime_data.tracker
    await _wait_for_wakes(entry, device_id, 2)
    job = _existing_job(entry, device_id)
    assert job.reason == "not enough space"
    assert job.attempts == 0
    assert states(events) == ["queued", "failed"]
    assert events[-1].data["reason"] == "not enough space"
    assert [old["state"] for old in tracker.history(device_id)] == ["failed"]
    assert hass.states.get(entity_id).attributes["in_progress"] is False
    assert await retained_on(hass, ota_topic(console, device_id)) == []


async def test_can_not_download_until_the_retry_cap(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """The package vanished from the console: the device fails at every wake until the cap."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    hass.config_entries.async_update_entry(entry, options={**entry.options, "retry_cap": 2})
    await _register(hass, entry, FILE_ID, "1.1.0")
    (packages_dir / f"{FILE_ID}.tar").unlink()
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await _install(hass, entity_id)
    # Reports closer than 2 s count as one attempt delivered twice, so wake a little slower.
    await start_devices(simulators, mosquitto, console, "--wake-period", "2.5")

    await wait_for(
        lambda: (job := _job(entry, device_id)) is not None and job.attempts == 1,
        15,
        "the first failed download",
    )
    assert _job_state(entry, device_id) is JobState.QUEUED
    assert hass.states.get(entity_id).attributes["in_progress"] is True
    await wait_for(
        lambda: shown(hass, entity_id, JobState.FAILED), 15, "the second failed download"
    )
    job = _existing_job(entry, device_id)
    assert job.attempts == 2
    assert job.reason is not None
    assert job.reason.startswith("can not download")
    assert states(events) == ["queued", "failed"]
    assert hass.states.get(entity_id).attributes["in_progress"] is False
    assert await retained_on(hass, ota_topic(console, device_id)) == []


async def test_can_not_apply(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """A real gzip .tar.gz: the device reports it cannot apply it and clears; the job fails."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow, fmt="microfreezer"
    )
    # register_package refuses a real gzip, so the console's file is swapped for one after a
    # valid package was registered under its id: what a user gets who re-uploads a file.
    await _register(hass, entry, FILE_ID, "2.0.0-broken", file_type=".tar.gz")
    write_package(packages_dir, FILE_ID, "gzip")
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await _install(hass, entity_id)
    await start_devices(simulators, mosquitto, console)

    await wait_for(lambda: shown(hass, entity_id, JobState.FAILED), 15, "the failure report")
    job = _existing_job(entry, device_id)
    assert job.reason == "can not apply"
    assert states(events) == ["queued", "failed"]
    assert hass.states.get(entity_id).attributes["in_progress"] is False
    assert await retained_on(hass, ota_topic(console, device_id)) == []
    tracker = entry.runtime_data.tracker
    await wait_for(lambda: tracker.stat(device_id) is not None, 10, "the device's boot /stat")
    assert tracker.stat(device_id).sw_commit == INITIAL_SW_COMMIT


async def test_device_that_never_wakes_times_out(
    hass: HomeAssistant,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """No device ever connects: after a day (cadence unknown) the job times out, cleared."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    await _register(hass, entry, FILE_ID, "1.1.0")
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await _install(hass, entity_id)
    topic = ota_topic(console, device_id)
    await _wait_on_broker(entry, device_id)
    assert len(await retained_on(hass, topic)) == 1

    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(hours=25))
    await hass.async_block_till_done()
    await wait_for(lambda: shown(hass, entity_id, JobState.TIMED_OUT), 10, "the queued timeout")
    assert states(events) == ["queued", "timed_out"]
    assert hass.states.get(entity_id).attributes["in_progress"] is False
    assert await retained_on(hass, topic) == []


# -- the user and Home Assistant -------------------------------------------------------------


async def test_cancel_while_queued(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """Cancelled before the device woke: the request is gone and the device never applies."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    await _register(hass, entry, FILE_ID, "1.1.0", sw_commit=NEW_COMMIT)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await _install(hass, entity_id)
    topic = ota_topic(console, device_id)
    await _wait_on_broker(entry, device_id)

    await hass.services.async_call(DOMAIN, "cancel", {"entity_id": entity_id}, blocking=True)
    assert _job_state(entry, device_id) is JobState.CANCELLED
    assert hass.states.get(entity_id).attributes["in_progress"] is False
    assert await retained_on(hass, topic) == []

    await start_devices(simulators, mosquitto, console)
    tracker = entry.runtime_data.tracker
    await wait_for(lambda: tracker.stat(device_id) is not None, 15, "the device's boot /stat")
    await _wait_for_wakes(entry, device_id, 2)
    assert tracker.stat(device_id).sw_commit == INITIAL_SW_COMMIT
    assert _job_state(entry, device_id) is JobState.CANCELLED
    assert states(events) == ["queued", "cancelled"]


async def test_restart_while_queued(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """HA restarts before the device wakes: the job is still queued, then applies and verifies."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    await _register(hass, entry, FILE_ID, "1.1.0", sw_commit=NEW_COMMIT)
    await _install(hass, entity_id)
    await _wait_on_broker(entry, device_id)

    await _restart_entry(hass, entry, console)
    # The broker replays the retained request to the new subscription: the job is still queued.
    await _wait_on_broker(entry, device_id, "the broker to replay the request after the restart")
    job = _existing_job(entry, device_id)
    assert job.state is JobState.QUEUED
    assert not job.request_gone
    assert hass.states.get(entity_id).attributes["in_progress"] is True
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    await start_devices(simulators, mosquitto, console)
    await wait_for(
        lambda: shown(hass, entity_id, JobState.VERIFIED),
        20,
        "the device to apply the package and its /stat to verify it",
    )
    assert states(events) == ["applied", "verified"]
    assert entry.runtime_data.tracker.stat(device_id).sw_commit == NEW_COMMIT
    assert hass.states.get(entity_id).attributes["installed_version"] == "1.1.0"
    assert await retained_on(hass, ota_topic(console, device_id)) == []


async def test_restart_while_applied(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """HA restarts between the applied report and the reboot's /stat: the /stat still verifies."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    await _register(hass, entry, FILE_ID, "1.1.0", sw_commit=NEW_COMMIT)
    await _install(hass, entity_id)
    # A slow reboot leaves room for the restart between the applied report and the /stat.
    await start_devices(simulators, mosquitto, console, "--reboot-delay", "6")
    await wait_for(lambda: shown(hass, entity_id, JobState.APPLIED), 15, "the applied report")

    await _restart_entry(hass, entry, console)
    job = _existing_job(entry, device_id)
    assert job.state is JobState.APPLIED, "the /stat came before the restart was over"
    assert job.awaiting_stat
    assert hass.states.get(entity_id).attributes["in_progress"] is True
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    await wait_for(lambda: shown(hass, entity_id, JobState.VERIFIED), 15, "the reboot's /stat")
    assert states(events) == ["verified"]
    assert entry.runtime_data.tracker.stat(device_id).sw_commit == NEW_COMMIT
    state = hass.states.get(entity_id)
    assert state.attributes["in_progress"] is False
    assert state.attributes["installed_version"] == "1.1.0"
    device = dr.async_get(hass).async_get_device_by_identifier((DOMAIN, device_id), entry.entry_id)
    assert device is not None
    assert device.sw_version == "1.1.0"


# -- odd reports -----------------------------------------------------------------------------


async def test_duplicate_reports(
    hass: HomeAssistant,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """A report delivered twice counts once: one download attempt, then one failed event."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    hass.config_entries.async_update_entry(entry, options={**entry.options, "retry_cap": 2})
    await _register(hass, entry, FILE_ID, "1.1.0")
    await _install(hass, entity_id)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    topic = ota_topic(console, device_id)

    # The same download failure twice within a second is one attempt, not the retry cap.
    for _ in range(2):
        await _publish_report(hass, topic, 2, FILE_ID, "can not download")
    await wait_for(
        lambda: (job := _job(entry, device_id)) is not None and job.attempts >= 1,
        10,
        "the download failure",
    )
    # A report for another file id is recorded in order after them: once it shows, both are in.
    await _publish_report(hass, topic, 2, "0000beef", "can not apply")
    await wait_for(
        lambda: (job := _job(entry, device_id)) is not None and bool(job.foreign_reports),
        10,
        "the marker report",
    )
    job = _existing_job(entry, device_id)
    assert job.attempts == 1
    assert job.state is JobState.QUEUED

    # The same final failure twice: one failed event, and the job keeps its first answer.
    for _ in range(2):
        await _publish_report(hass, topic, 2, FILE_ID, "can not apply")
    await wait_for(lambda: shown(hass, entity_id, JobState.FAILED), 10, "the failure")
    # The check of the retained request takes long enough for the second report to come back.
    assert await retained_on(hass, topic) == []
    assert states(events) == ["failed"]
    job = _existing_job(entry, device_id)
    assert job.reason == "can not apply"
    assert [old["state"] for old in entry.runtime_data.tracker.history(device_id)] == ["failed"]


async def test_foreign_file_id(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """A report for another file id is recorded, not taken as the answer; the right one is."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    await _register(hass, entry, FILE_ID, "1.1.0", sw_commit=NEW_COMMIT)
    await _install(hass, entity_id)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    topic = ota_topic(console, device_id)

    await _publish_report(hass, topic, 2, "0badf00d", "can not apply")
    await wait_for(
        lambda: (job := _job(entry, device_id)) is not None and bool(job.foreign_reports),
        10,
        "the foreign report to be recorded",
    )
    job = _existing_job(entry, device_id)
    assert job.state is JobState.QUEUED
    assert [(r["file_id"], r["code"], r["reason"]) for r in job.foreign_reports] == [
        ("0badf00d", 2, "can not apply")
    ]
    assert hass.states.get(entity_id).attributes["in_progress"] is True
    assert events == []

    await start_devices(simulators, mosquitto, console)
    await wait_for(
        lambda: shown(hass, entity_id, JobState.VERIFIED),
        20,
        "the device to apply the right package",
    )
    assert states(events) == ["applied", "verified"]


# -- registration ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pax", "gzip"])
async def test_package_refused_by_the_format_check(
    hass: HomeAssistant,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
    fmt: PackageFormat,
) -> None:
    """A package the firmware would mangle or fail on is refused, and nothing is stored."""
    write_package(packages_dir, "0badf00d", fmt)
    console, entry, _, _ = await _setup(hass, packages_dir, simulators, setup_through_config_flow)
    catalogue = entry.runtime_data.catalogue
    before = catalogue.packages
    file_type = ".tar" if fmt == "pax" else ".tar.gz"

    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN,
            "register_package",
            {"file_id": "0badf00d", "file_type": file_type, "version": "9.9.9"},
            blocking=True,
        )
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == "package_format"
    assert catalogue.packages == before
    assert catalogue.by_file_id("0badf00d") is None
    assert console.devices  # the console was up: the refusal is the check, not a download error


async def test_applied_while_home_assistant_was_down(
    hass: HomeAssistant,
    mosquitto: int,
    packages_dir: Path,
    simulators: StartSimulator,
    setup_through_config_flow: SetupIntegration,
) -> None:
    """The reports are lost while HA is down; the request's absence and a later /stat settle it."""
    console, entry, device_id, entity_id = await _setup(
        hass, packages_dir, simulators, setup_through_config_flow
    )
    await _register(hass, entry, FILE_ID, "1.1.0", sw_commit=NEW_COMMIT)
    await _install(hass, entity_id)
    await _wait_on_broker(entry, device_id)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()

    # The device applies, reports to nobody, clears the request and reboots while HA is down.
    state_dir = packages_dir.parent / "device-state"
    state_file = state_dir / f"{device_id}.json"
    devices = await start_devices(simulators, mosquitto, console, "--state-dir", str(state_dir))
    await wait_for(
        lambda: state_file.exists() and NEW_COMMIT in state_file.read_text(),
        15,
        "the device to apply the package",
    )
    await hass.async_add_executor_job(stop_process, devices.process)
    assert await retained_on(hass, ota_topic(console, device_id)) == []

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await wait_for_our_subscriptions(hass, console)
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    # No request is replayed: the job waits for the device's next /stat to tell what happened.
    await wait_for(
        lambda: (job := _job(entry, device_id)) is not None and job.request_gone,
        10,
        "the tracker to notice the request is gone",
    )
    assert _job_state(entry, device_id) is JobState.QUEUED

    # The next power-on sends /stat with the package's commit.
    await start_devices(simulators, mosquitto, console, "--state-dir", str(state_dir))
    await wait_for(lambda: shown(hass, entity_id, JobState.VERIFIED), 15, "the power-on /stat")
    assert states(events) == ["verified"]
    assert hass.states.get(entity_id).attributes["installed_version"] == "1.1.0"
