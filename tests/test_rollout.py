"""Staged rollouts: canary, waves, max open, skips, thresholds, pause/resume/abort, restarts."""

from datetime import timedelta
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.persistent_notification import DOMAIN as PN_DOMAIN
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.util import dt as dt_util
import probatio
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.insighio_ota import rollout as rollout_module
from custom_components.insighio_ota.const import (
    CONF_MIN_BATTERY_MV,
    DOMAIN,
    VERIFY_WINDOW,
)
from custom_components.insighio_ota.rollout import (
    DeviceStatus,
    Rollout,
    RolloutManager,
    RolloutState,
    plan_waves,
)

from .conftest import console_device, ota_topic, stat_payload, stat_topic
from .helpers import (
    fire,
    publishes,
    register,
    report,
    restart,
    set_options,
    setup_second_entry,
    telemetry_payload,
    telemetry_topic,
    tick,
)

IDS = [f"{index:08x}-bbbb-4bbb-8bbb-bbbbbbbbbbbb" for index in range(1, 9)]
NAMES = [f"Sensor {index:02d}" for index in range(1, 9)]
ID = dict(zip(NAMES, IDS, strict=True))


@pytest.fixture
def console_devices() -> list[dict[str, Any]]:
    """Eight devices, listed out of name order: the rollout sorts them."""
    return [console_device(ID[name], name) for name in reversed(NAMES)]


def manager(entry: MockConfigEntry) -> RolloutManager:
    """Return the entry's rollout manager."""
    return entry.runtime_data.rollouts


def ha_ids(hass: HomeAssistant, entry: MockConfigEntry, names: list[str]) -> list[str]:
    """Return the HA device ids of devices named."""
    registry = dr.async_get(hass)
    devices = [
        registry.async_get_device_by_identifier((DOMAIN, ID[n]), entry.entry_id) for n in names
    ]
    return [device.id for device in devices if device is not None]


async def start(
    hass: HomeAssistant, entry: MockConfigEntry, names: list[str] | None = None, **data: Any
) -> dict[str, Any]:
    """Start a rollout of 1.1.0 to the devices named (all by default); return the response."""
    response = await hass.services.async_call(
        DOMAIN,
        "start_rollout",
        {"device_id": ha_ids(hass, entry, names or NAMES), "version": "1.1.0", **data},
        blocking=True,
        return_response=True,
    )
    await hass.async_block_till_done()
    assert response is not None
    return response


async def action(hass: HomeAssistant, service: str, rollout: str) -> None:
    """Pause, resume or abort a rollout."""
    await hass.services.async_call(DOMAIN, service, {"rollout": rollout}, blocking=True)
    await hass.async_block_till_done()


def requested(mqtt_mock: Any) -> list[str]:
    """Return the names of the devices a request was published for, in order."""
    names = {ota_topic(device_id): name for name, device_id in ID.items()}
    return [names[call[0]] for call in publishes(mqtt_mock) if call[1]]


def status(entry: MockConfigEntry, rollout_id: str) -> dict[str, str]:
    """Return the status of each device of a rollout, by name."""
    rollout = manager(entry).find(rollout_id)
    assert rollout is not None
    return {device.name: device.status.value for device in rollout.devices}


def the_rollout(entry: MockConfigEntry, rollout_id: str) -> Rollout:
    """Return a rollout that must exist."""
    rollout = manager(entry).find(rollout_id)
    assert rollout is not None
    return rollout


async def succeed(hass: HomeAssistant, *names: str) -> None:
    """Let the devices apply the package and reboot."""
    for name in names:
        await fire(hass, ota_topic(ID[name]), report(1))
        await fire(hass, stat_topic(ID[name]), stat_payload())


async def fail(hass: HomeAssistant, *names: str) -> None:
    """Let the devices fail to apply the package."""
    for name in names:
        await fire(hass, ota_topic(ID[name]), report(2, reason="can not apply"))


def issue(hass: HomeAssistant, rollout_id: str) -> ir.IssueEntry | None:
    """Return the rollout's repair issue."""
    return ir.async_get(hass).async_get_issue(DOMAIN, f"rollout_threshold_{rollout_id}")


def notification(hass: HomeAssistant, rollout_id: str) -> dict[str, Any] | None:
    """Return the rollout's notification."""
    return hass.data.get(PN_DOMAIN, {}).get(f"{DOMAIN}_rollout_{rollout_id}")


@pytest.fixture
async def registered(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> MockConfigEntry:
    """Register 1.1.0; forget the publishes so far."""
    await register(hass)
    mqtt_mock.async_publish.reset_mock()
    return setup_integration


async def test_canary_then_waves(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """The canary alone, then waves of wave_size in name order, each after the previous ended."""
    changes: list[None] = []
    unsubscribe = manager(registered).async_add_listener(lambda: changes.append(None))

    response = await start(hass, registered, wave_size=3, name="night")

    assert response["name"] == "night"
    assert response["state"] == "running"
    assert [[d["name"] for d in wave] for wave in response["waves"]] == [
        ["Sensor 01"],
        ["Sensor 02", "Sensor 03", "Sensor 04"],
        ["Sensor 05", "Sensor 06", "Sensor 07"],
        ["Sensor 08"],
    ]
    rollout = the_rollout(registered, response["rollout_id"])
    assert (rollout.current_wave, rollout.wave_count) == (1, 4)
    assert requested(mqtt_mock) == ["Sensor 01"]
    assert changes

    await succeed(hass, "Sensor 01")
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02", "Sensor 03", "Sensor 04"]
    assert rollout.current_wave == 2

    await succeed(hass, "Sensor 02", "Sensor 03")
    assert len(requested(mqtt_mock)) == 4  # Sensor 04 still waits: no third wave yet.
    await succeed(hass, "Sensor 04")
    assert requested(mqtt_mock)[4:] == ["Sensor 05", "Sensor 06", "Sensor 07"]

    await succeed(hass, "Sensor 05", "Sensor 06", "Sensor 07", "Sensor 08")
    assert rollout.state is RolloutState.FINISHED
    assert rollout.counts() == {
        "pending": 0,
        "skipped": 0,
        "queued": 0,
        "succeeded": 8,
        "failed": 0,
    }
    unsubscribe()


async def test_max_open_is_respected(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """No canary, one wave of four, at most two waiting at once."""
    response = await start(hass, registered, NAMES[:4], canary_count=0, wave_size=4, max_open=2)
    assert len(response["waves"]) == 1
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02"]

    await fail(hass, "Sensor 02")
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02", "Sensor 03"]
    await succeed(hass, "Sensor 01")
    assert requested(mqtt_mock)[3:] == ["Sensor 04"]


async def test_devices_that_cannot_take_it_are_skipped(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A guard or a job already waiting skips the device with the reason: no failure."""
    await set_options(hass, registered, **{CONF_MIN_BATTERY_MV: 3500})
    await fire(hass, telemetry_topic(ID["Sensor 02"]), telemetry_payload(vbatt=3100))
    await hass.services.async_call(
        "update", "install", {"entity_id": "update.sensor_03_firmware"}, blocking=True
    )
    mqtt_mock.async_publish.reset_mock()

    response = await start(hass, registered, NAMES[:4], failure_threshold_count=1)
    await succeed(hass, "Sensor 01")

    rollout = the_rollout(registered, response["rollout_id"])
    assert status(registered, response["rollout_id"]) == {
        "Sensor 01": "succeeded",
        "Sensor 02": "skipped",
        "Sensor 03": "skipped",
        "Sensor 04": "queued",
    }
    reasons = {device.name: device.reason for device in rollout.devices}
    assert "3100 mV" in (reasons["Sensor 02"] or "")
    assert "still waiting" in (reasons["Sensor 03"] or "")
    assert rollout.state is RolloutState.RUNNING  # A skip is not a failure.
    await succeed(hass, "Sensor 04")
    assert rollout.state is RolloutState.FINISHED


async def test_threshold_by_count_pauses_then_resume_goes_on(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Two failures pause the rollout; the open job still counts; resume starts the next wave."""
    response = await start(hass, registered, wave_size=3, failure_threshold_count=2)
    rollout_id = response["rollout_id"]
    rollout = the_rollout(registered, rollout_id)
    await succeed(hass, "Sensor 01")
    await fail(hass, "Sensor 02")
    assert rollout.state is RolloutState.RUNNING
    await fail(hass, "Sensor 03")

    assert rollout.state is RolloutState.PAUSED
    assert rollout.pause_reason == "2 of 4 devices failed (threshold 2)"
    found = issue(hass, rollout_id)
    assert found is not None
    assert found.translation_key == "rollout_threshold"
    assert found.severity is ir.IssueSeverity.WARNING
    assert not found.is_fixable
    assert found.translation_placeholders["failed"] == "2"
    assert notification(hass, rollout_id) is not None

    await succeed(hass, "Sensor 04")  # The wave ends, but nothing more starts.
    assert len(requested(mqtt_mock)) == 4
    assert status(registered, rollout_id)["Sensor 04"] == "succeeded"

    await action(hass, "resume_rollout", rollout_id)
    assert rollout.state is RolloutState.RUNNING
    assert issue(hass, rollout_id) is None
    assert notification(hass, rollout_id) is None
    assert requested(mqtt_mock)[4:] == ["Sensor 05", "Sensor 06", "Sensor 07"]
    # Failures before the resume no longer count: one more does not cross 2.
    await fail(hass, "Sensor 05")
    assert rollout.state is RolloutState.RUNNING


async def test_threshold_by_percent_leaves_the_rest_untouched(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """10 %: one failure among the devices started so far crosses it; later waves never start."""
    response = await start(hass, registered, wave_size=3, failure_threshold_percent=10)
    rollout = the_rollout(registered, response["rollout_id"])
    await succeed(hass, "Sensor 01")
    await fail(hass, "Sensor 03")

    assert rollout.state is RolloutState.PAUSED
    assert rollout.pause_reason == "1 of 4 devices failed (threshold 10 %)"
    await succeed(hass, "Sensor 02", "Sensor 04")
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02", "Sensor 03", "Sensor 04"]
    assert rollout.counts()["pending"] == 4


async def test_cancelled_job_counts_failed_and_unverified_succeeded(
    hass: HomeAssistant,
    registered: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A user cancel is a failure; applied but never confirmed within the window succeeds."""
    response = await start(hass, registered, NAMES[:3], canary_count=2, failure_threshold_count=5)
    await hass.services.async_call(
        DOMAIN, "cancel", {"entity_id": "update.sensor_01_firmware"}, blocking=True
    )
    await fire(hass, ota_topic(ID["Sensor 02"]), report(1))
    assert status(registered, response["rollout_id"])["Sensor 02"] == "queued"
    await tick(hass, freezer, VERIFY_WINDOW + timedelta(seconds=1))
    await hass.async_block_till_done()

    assert status(registered, response["rollout_id"]) == {
        "Sensor 01": "failed",
        "Sensor 02": "succeeded",
        "Sensor 03": "queued",
    }


async def test_abort_cancels_open_jobs(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Abort clears the waiting requests; nothing else starts; every device is skipped."""
    response = await start(hass, registered, NAMES[:4], canary_count=2, name="abort me")
    await succeed(hass, "Sensor 01")

    await action(hass, "abort_rollout", "abort me")

    rollout = the_rollout(registered, response["rollout_id"])
    assert rollout.state is RolloutState.ABORTED
    assert (ota_topic(ID["Sensor 02"]), "", 1, True) in publishes(mqtt_mock)
    assert status(registered, rollout.rollout_id) == {
        "Sensor 01": "succeeded",
        "Sensor 02": "skipped",
        "Sensor 03": "skipped",
        "Sensor 04": "skipped",
    }
    state = hass.states.get("update.sensor_02_firmware")
    assert state is not None
    assert state.attributes["ota_state"] == "cancelled"
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02"]
    with pytest.raises(ServiceValidationError) as exc_info:
        await action(hass, "abort_rollout", "abort me")
    assert exc_info.value.translation_key == "rollout_ended"


async def test_pause_and_resume_by_the_user(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A paused rollout records job ends but starts nothing; wrong-state calls are refused."""
    response = await start(hass, registered, NAMES[:3])
    rollout_id = response["rollout_id"]
    with pytest.raises(ServiceValidationError) as exc_info:
        await action(hass, "resume_rollout", rollout_id)
    assert exc_info.value.translation_key == "rollout_not_paused"

    await action(hass, "pause_rollout", rollout_id)
    with pytest.raises(ServiceValidationError) as exc_info:
        await action(hass, "pause_rollout", rollout_id)
    assert exc_info.value.translation_key == "rollout_not_running"
    await succeed(hass, "Sensor 01")
    assert requested(mqtt_mock) == ["Sensor 01"]
    assert the_rollout(registered, rollout_id).pause_reason == "paused by the user"

    await action(hass, "resume_rollout", rollout_id)
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02", "Sensor 03"]

    with pytest.raises(ServiceValidationError) as exc_info:
        await action(hass, "pause_rollout", "no such rollout")
    assert exc_info.value.translation_key == "unknown_rollout"


async def test_pause_between_waves(
    hass: HomeAssistant,
    registered: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The next wave waits for the pause after the previous one ended."""
    response = await start(hass, registered, NAMES[:3], pause_between_waves={"minutes": 10})
    await succeed(hass, "Sensor 01")
    rollout = the_rollout(registered, response["rollout_id"])
    assert rollout.next_wave_at is not None
    assert requested(mqtt_mock) == ["Sensor 01"]

    await tick(hass, freezer, timedelta(minutes=9))
    assert requested(mqtt_mock) == ["Sensor 01"]
    await tick(hass, freezer, timedelta(minutes=1, seconds=1))
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02", "Sensor 03"]
    assert rollout.next_wave_at is None


async def test_restart_mid_rollout_resumes(
    hass: HomeAssistant,
    registered: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The rollout, its waiting jobs and its next-wave timer survive a restart."""
    response = await start(
        hass, registered, NAMES[:5], wave_size=2, pause_between_waves={"minutes": 10}
    )
    rollout_id = response["rollout_id"]
    await succeed(hass, "Sensor 01")
    await restart(hass, registered)
    await tick(hass, freezer, timedelta(minutes=11))
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02", "Sensor 03"]

    await restart(hass, registered)
    await succeed(hass, "Sensor 02", "Sensor 03")
    await tick(hass, freezer, timedelta(minutes=11))
    assert requested(mqtt_mock)[3:] == ["Sensor 04", "Sensor 05"]
    assert status(registered, rollout_id) == {
        "Sensor 01": "succeeded",
        "Sensor 02": "succeeded",
        "Sensor 03": "succeeded",
        "Sensor 04": "queued",
        "Sensor 05": "queued",
    }


@pytest.mark.parametrize(
    ("stored_state", "expected"), [("verified", "succeeded"), ("failed", "failed")]
)
async def test_job_that_ended_while_ha_was_down(
    hass: HomeAssistant,
    registered: MockConfigEntry,
    mqtt_mock: Any,
    hass_storage: dict[str, Any],
    *,
    stored_state: str,
    expected: str,
) -> None:
    """A job that ended while HA was down counts by its end; the rollout then moves on."""
    response = await start(hass, registered, NAMES[:3], failure_threshold_count=1)
    assert await hass.config_entries.async_unload(registered.entry_id)
    await hass.async_block_till_done()
    jobs = hass_storage[f"{DOMAIN}.{registered.entry_id}.jobs"]["data"]["jobs"]
    jobs[ID["Sensor 01"]]["state"] = stored_state
    assert await hass.config_entries.async_setup(registered.entry_id)
    await hass.async_block_till_done()

    rollout = the_rollout(registered, response["rollout_id"])
    assert status(registered, rollout.rollout_id)["Sensor 01"] == expected
    if expected == "succeeded":
        assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02", "Sensor 03"]
    else:
        assert rollout.state is RolloutState.PAUSED
        assert issue(hass, rollout.rollout_id) is not None


async def test_jobs_replaced_or_lost_while_ha_was_down(
    hass: HomeAssistant, registered: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """Another job after ours: the history has ours. A waiting job gone: it was lost."""
    response = await start(hass, registered, NAMES[:4], canary_count=3, max_open=3)
    await fire(hass, ota_topic(ID["Sensor 01"]), report(2, reason="can not apply"))
    assert await hass.config_entries.async_unload(registered.entry_id)
    await hass.async_block_till_done()
    stored = hass_storage[f"{DOMAIN}.{registered.entry_id}.jobs"]["data"]
    stored["jobs"][ID["Sensor 01"]]["job_id"] = "someoneelse"
    del stored["jobs"][ID["Sensor 02"]]  # Its history still shows it waiting.
    del stored["jobs"][ID["Sensor 03"]]
    stored["devices"].pop(ID["Sensor 03"], None)  # No trace at all.
    rollouts = hass_storage[f"{DOMAIN}.{registered.entry_id}.rollouts"]["data"]["rollouts"]
    rollouts[0]["devices"][0]["status"] = "queued"  # As if HA stopped before recording it.
    assert await hass.config_entries.async_setup(registered.entry_id)
    await hass.async_block_till_done()

    rollout = the_rollout(registered, response["rollout_id"])
    reasons = {device.name: (device.status, device.reason) for device in rollout.devices}
    assert reasons["Sensor 01"] == (DeviceStatus.FAILED, "can not apply")
    assert reasons["Sensor 02"] == (DeviceStatus.FAILED, "the job was lost")
    assert reasons["Sensor 03"] == (DeviceStatus.FAILED, "the job was lost")


async def test_device_in_two_rollouts_is_refused(
    hass: HomeAssistant, registered: MockConfigEntry
) -> None:
    """A device still pending or waiting in an active rollout cannot join another."""
    first = await start(hass, registered, NAMES[:3], name="first")
    with pytest.raises(ServiceValidationError) as exc_info:
        await start(hass, registered, NAMES[2:5])
    assert exc_info.value.translation_key == "device_in_rollout"
    assert exc_info.value.translation_placeholders == {"device": "Sensor 03", "rollout": "first"}

    second = await start(hass, registered, NAMES[3:5])
    assert second["name"].startswith("1.1.0 ")
    response = await hass.services.async_call(
        DOMAIN, "list_rollouts", {}, blocking=True, return_response=True
    )
    assert response is not None
    assert [r["rollout_id"] for r in response["rollouts"]] == [
        first["rollout_id"],
        second["rollout_id"],
    ]
    assert response["rollouts"][0]["config_entry_id"] == registered.entry_id


async def test_mqtt_failure_or_removed_package_pauses(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A refused publish or a package no longer registered pause the rollout, with a note."""
    mqtt_mock.async_publish.side_effect = HomeAssistantError("broker gone")
    response = await start(hass, registered, NAMES[:2])
    rollout = the_rollout(registered, response["rollout_id"])
    assert rollout.state is RolloutState.PAUSED
    assert "broker gone" in (rollout.pause_reason or "")
    assert notification(hass, rollout.rollout_id) is not None
    assert status(registered, rollout.rollout_id)["Sensor 01"] == "pending"

    mqtt_mock.async_publish.side_effect = None
    await hass.services.async_call(
        DOMAIN, "remove_package", {"file_id": rollout.file_id}, blocking=True
    )
    await action(hass, "resume_rollout", rollout.rollout_id)
    assert rollout.state is RolloutState.PAUSED
    assert rollout.file_id in (rollout.pause_reason or "")


async def test_two_entries_need_config_entry_id(
    hass: HomeAssistant, registered: MockConfigEntry
) -> None:
    """Targets in two accounts are refused: a rollout belongs to one."""
    second = await setup_second_entry(hass)
    elsewhere = dr.async_get(hass).async_get_or_create(
        config_entry_id=second.entry_id, identifiers={(DOMAIN, "another-account-device")}
    )
    data = {"device_id": [*ha_ids(hass, registered, NAMES[:1]), elsewhere.id], "version": "1.1.0"}
    with pytest.raises(ServiceValidationError) as exc_info:
        await hass.services.async_call(DOMAIN, "start_rollout", data, blocking=True)
    assert exc_info.value.translation_key == "entry_ambiguous"

    await hass.services.async_call(
        DOMAIN,
        "start_rollout",
        {**data, "config_entry_id": registered.entry_id, "name": "one"},
        blocking=True,
    )
    await action(hass, "pause_rollout", "one")
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            DOMAIN,
            "resume_rollout",
            {"rollout": "one", "config_entry_id": second.entry_id},
            blocking=True,
        )
    listed = await hass.services.async_call(
        DOMAIN,
        "list_rollouts",
        {"config_entry_id": second.entry_id},
        blocking=True,
        return_response=True,
    )
    assert listed == {"rollouts": []}
    await hass.config_entries.async_unload(second.entry_id)
    await hass.async_block_till_done()


async def test_ended_rollouts_are_pruned_and_names_prefer_active(
    hass: HomeAssistant, registered: MockConfigEntry
) -> None:
    """Only the newest ended rollouts are kept; a name finds the active one first."""
    with patch.object(rollout_module, "ENDED_ROLLOUTS_KEPT", 1):
        first = await start(hass, registered, NAMES[:1], name="same")
        await action(hass, "abort_rollout", first["rollout_id"])
        second = await start(hass, registered, NAMES[:1], name="same")
        assert the_rollout(registered, "same").rollout_id == second["rollout_id"]
        await action(hass, "abort_rollout", "same")
        assert the_rollout(registered, "same").rollout_id == second["rollout_id"]
        third = await start(hass, registered, NAMES[:1], name="third")
    assert [r.rollout_id for r in manager(registered).rollouts] == [
        second["rollout_id"],
        third["rollout_id"],
    ]


async def test_unreadable_stored_rollout_is_dropped(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    config_entry: MockConfigEntry,
    setup_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A damaged record does not keep the others (or the entry) from loading."""
    assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    hass_storage[f"{DOMAIN}.{config_entry.entry_id}.rollouts"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{config_entry.entry_id}.rollouts",
        "data": {"rollouts": [{"rollout_id": "x"}]},
    }
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert manager(config_entry).rollouts == []
    assert "unreadable stored rollout" in caplog.text


def test_plan_waves_and_round_trip() -> None:
    """Canary first, then full waves; no canary wave with 0; a rollout survives JSON."""
    assert plan_waves("abcdefg", 1, 3) == [["a"], ["b", "c", "d"], ["e", "f", "g"]]
    assert plan_waves("abc", 0, 2) == [["a", "b"], ["c"]]
    assert plan_waves("ab", 5, 2) == [["a", "b"]]
    assert plan_waves("", 1, 2) == []
    rollout = Rollout(
        rollout_id="r1",
        name="n",
        file_id="f",
        version="v",
        devices=[rollout_module.RolloutDevice("a", "A", DeviceStatus.QUEUED, job_id="j")],
        waves=[["a"]],
        state=RolloutState.PAUSED,
        failure_threshold_percent=12.5,
    )
    assert Rollout.from_dict(rollout.as_dict()) == rollout


async def test_pause_during_the_pause_between_waves(
    hass: HomeAssistant,
    registered: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Pausing drops the next-wave timer; resuming after the pause has elapsed starts at once."""
    response = await start(hass, registered, NAMES[:3], pause_between_waves={"minutes": 10})
    await succeed(hass, "Sensor 01")
    await action(hass, "pause_rollout", response["rollout_id"])
    await tick(hass, freezer, timedelta(minutes=11))
    assert requested(mqtt_mock) == ["Sensor 01"]

    await action(hass, "resume_rollout", response["rollout_id"])
    assert requested(mqtt_mock) == ["Sensor 01", "Sensor 02", "Sensor 03"]


async def test_publish_failing_mid_wave_stops_the_wave(
    hass: HomeAssistant, registered: MockConfigEntry, mqtt_mock: Any
) -> None:
    """The first device of a wave is queued; the publish of the second fails: nothing more."""
    publish = mqtt_mock.async_publish.side_effect
    calls: list[str] = []

    async def second_fails(_hass: HomeAssistant, topic: str, *args: Any, **kwargs: Any) -> None:
        calls.append(topic)
        if len(calls) == 2:
            raise HomeAssistantError("broker gone")

    mqtt_mock.async_publish.side_effect = second_fails
    response = await start(hass, registered, NAMES[:3], canary_count=0)
    mqtt_mock.async_publish.side_effect = publish

    assert status(registered, response["rollout_id"]) == {
        "Sensor 01": "queued",
        "Sensor 02": "pending",
        "Sensor 03": "pending",
    }
    assert the_rollout(registered, response["rollout_id"]).state is RolloutState.PAUSED


def test_devices_are_ordered_as_people_count() -> None:
    """Sensor 2 comes before Sensor 10 in the waves: digit runs compare as numbers."""
    from custom_components.insighio_ota.rollout import _natural_key  # noqa: PLC0415

    names = ["Sensor 10", "sensor 2", "Sensor 1", "Alpha", "Sensor 20"]
    assert sorted(names, key=_natural_key) == [
        "Alpha",
        "Sensor 1",
        "sensor 2",
        "Sensor 10",
        "Sensor 20",
    ]


async def test_rollout_window_holds_its_requests(
    hass: HomeAssistant,
    registered: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A rollout with its own night window holds the canary's request until the window opens."""
    freezer.move_to(dt_util.now().replace(hour=12, minute=0, second=0, microsecond=0))
    response = await start(
        hass, registered, ["Sensor 01"], window_start="01:00", window_end="05:00"
    )

    rollout = the_rollout(registered, response["rollout_id"])
    assert rollout.window is not None
    assert requested(mqtt_mock) == []
    job = registered.runtime_data.tracker.job(ID["Sensor 01"])
    assert job is not None
    assert job.held_until is not None

    opening = dt_util.now().replace(hour=1, minute=0) + timedelta(days=1)
    await tick(hass, freezer, opening - dt_util.now() + timedelta(seconds=1))

    assert requested(mqtt_mock) == ["Sensor 01"]


async def test_rollout_window_needs_both_ends(
    hass: HomeAssistant, registered: MockConfigEntry
) -> None:
    """One end of a window alone is refused by the action's schema."""
    with pytest.raises(probatio.Invalid):
        await start(hass, registered, ["Sensor 01"], window_start="01:00")


async def test_job_ends_are_written_together_a_moment_later(
    hass: HomeAssistant,
    registered: MockConfigEntry,
    hass_storage: dict[str, Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A wave's job ends are stored one second later, in one write, not one write each."""
    response = await start(hass, registered, NAMES[:3], canary_count=3, max_open=3)
    key = f"{DOMAIN}.{registered.entry_id}.rollouts"

    def stored() -> dict[str, str]:
        (rollout,) = (
            rollout
            for rollout in hass_storage[key]["data"]["rollouts"]
            if rollout["rollout_id"] == response["rollout_id"]
        )
        return {device["name"]: device["status"] for device in rollout["devices"]}

    for name in NAMES[:2]:
        await fire(hass, ota_topic(ID[name]), report(2, reason="can not apply"))
    assert status(registered, response["rollout_id"])["Sensor 02"] == "failed"
    assert stored()["Sensor 02"] == "queued"

    await tick(hass, freezer, timedelta(seconds=1))
    assert stored() == {"Sensor 01": "failed", "Sensor 02": "failed", "Sensor 03": "queued"}


async def test_job_ends_written_while_the_wave_keeps_reporting(
    hass: HomeAssistant,
    registered: MockConfigEntry,
    hass_storage: dict[str, Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """The first job end is on disk a second later, although the wave's reports keep coming.

    HA's delayed write moves to the latest time asked for: asked again at every end of a wave
    that reports without a pause, it would wait for the whole wave.
    """
    key = f"{DOMAIN}.{registered.entry_id}.rollouts"
    await start(hass, registered, canary_count=0, wave_size=8)

    for name in NAMES[:6]:
        await succeed(hass, name)
        await tick(hass, freezer, timedelta(seconds=0.4))

    (stored,) = hass_storage[key]["data"]["rollouts"]
    assert stored["devices"][0]["status"] == "succeeded"
