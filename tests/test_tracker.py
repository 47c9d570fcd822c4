"""The OTA state machine as a user sees it: requests, device reports, /stat, time and restarts."""

from datetime import timedelta
import json
import logging
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.persistent_notification import DOMAIN as PN_DOMAIN
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_mqtt_message,
    async_fire_time_changed,
)

from custom_components.insighio_ota.catalogue import Package
from custom_components.insighio_ota.const import DOMAIN, EVENT_OTA_STATUS, VERIFY_WINDOW

from .conftest import (
    CONTROL_CHANNEL,
    DEVICE_ID,
    OTHER_DEVICE_ID,
    PACKAGE_ID,
    ota_topic,
    stat_payload,
    stat_topic,
)

ENTITY_ID = "update.sensor_1_firmware"
OLD_ID = "0ld0ld00"
NOTIFICATION_ID = f"{DOMAIN}_{DEVICE_ID}_failed"


def request_payload(file_id: str = PACKAGE_ID, file_type: str = ".tar", size: int = 3987) -> str:
    """Return the retained request as we publish it."""
    return json.dumps(
        [
            {"n": "e", "v": 0},
            {"n": "i", "vs": file_id},
            {"n": "t", "vs": file_type},
            {"n": "s", "v": size},
        ],
        separators=(",", ":"),
    )


def report(code: int, file_id: str = PACKAGE_ID, reason: str | None = None) -> str:
    """Return a status report in the firmware's own key order."""
    records: list[dict[str, Any]] = [{"v": code, "n": "e"}, {"vs": file_id, "n": "i"}]
    if reason is not None:
        records.append({"vs": reason, "n": "m"})
    return json.dumps(records)


async def fire(hass: HomeAssistant, topic: str, payload: str, *, retain: bool = False) -> None:
    """Deliver an MQTT message to HA and let everything it causes run.

    As with a real broker, `retain` is set only on the replay that follows a subscription;
    HA's MQTT drops a second retained message on a topic, as a broker would never send one.
    """
    async_fire_mqtt_message(hass, topic, payload, retain=retain)
    await hass.async_block_till_done()


async def register(
    hass: HomeAssistant, version: str = "1.1.0", file_id: str = PACKAGE_ID, **data: Any
) -> None:
    """Register a package (the console serves the same bytes for every file id)."""
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": file_id, "version": version, **data},
        blocking=True,
    )


async def install(hass: HomeAssistant, version: str | None = None) -> None:
    """Press Install (for a given version, when one is named)."""
    data: dict[str, Any] = {"entity_id": ENTITY_ID}
    if version is not None:
        data["version"] = version
    await hass.services.async_call("update", "install", data, blocking=True)
    await hass.async_block_till_done()


def attributes(hass: HomeAssistant) -> dict[str, Any]:
    """Return the update entity's attributes."""
    state = hass.states.get(ENTITY_ID)
    assert state is not None
    return dict(state.attributes)


def publishes(mqtt_mock: Any) -> list[tuple[Any, ...]]:
    """Return the (topic, payload, qos, retain) of every publish so far."""
    return [call.args for call in mqtt_mock.async_publish.call_args_list]


@pytest.fixture
async def queued(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> list[Any]:
    """Report an old version, register 1.1.0, install it; return the captured status events."""
    await fire(hass, stat_topic(), stat_payload("1a2b3c4"))
    await register(hass, release_notes="Better radio")
    events = async_capture_events(hass, EVENT_OTA_STATUS)
    await install(hass)
    assert publishes(mqtt_mock)[-1] == (ota_topic(), request_payload(), 1, True)
    assert [event.data["state"] for event in events] == ["queued"]
    mqtt_mock.async_publish.reset_mock()
    events.clear()
    return events


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
    assert events_states(queued) == []
    assert publishes(mqtt_mock) == []  # Not cleared: the device has yet to read it.
    assert _warnings(caplog, "") == 0  # Expected traffic, not a problem to report.


def events_states(events: list[Any]) -> list[str]:
    """Return the states of the captured status events."""
    return [event.data["state"] for event in events]


async def test_applied_then_stat_verifies(
    hass: HomeAssistant,
    queued: list[Any],
    mqtt_mock: Any,
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """e=1 installs the label and clears the request; the /stat of the reboot verifies it."""
    await fire(hass, ota_topic(), report(1))

    assert publishes(mqtt_mock) == [(ota_topic(), "", 1, True)]
    attrs = attributes(hass)
    assert attrs["installed_version"] == "1.1.0"
    assert attrs["in_progress"] is True  # Until the device has rebooted and said so.
    assert attrs["ota_state"] == "applied"
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
    await fire(hass, stat_topic(), stat_payload("9f8e7d6"))

    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "verified"
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued) == ["applied", "verified"]
    device = device_registry.async_get(device.id)
    assert device.sw_version == "1.1.0"
    assert device.hw_version == "esp32s3"


async def test_duplicate_applied_changes_nothing(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any
) -> None:
    """A repeated e=1 fires no second event and publishes nothing more."""
    await fire(hass, ota_topic(), report(1))
    await fire(hass, ota_topic(), report(1))

    assert events_states(queued) == ["applied"]
    assert publishes(mqtt_mock) == [(ota_topic(), "", 1, True)]

    # Even after the job is verified, a late duplicate is only noise.
    await fire(hass, stat_topic(), stat_payload("9f8e7d6"))
    await fire(hass, ota_topic(), report(1))
    assert events_states(queued) == ["applied", "verified"]
    assert attributes(hass)["ota_state"] == "verified"


async def test_stat_never_arrives(
    hass: HomeAssistant, queued: list[Any], freezer: FrozenDateTimeFactory
) -> None:
    """Without /stat, progress stops when the verify window ends; the job stays applied."""
    await fire(hass, ota_topic(), report(1))

    freezer.tick(VERIFY_WINDOW - timedelta(seconds=5))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert attributes(hass)["in_progress"] is True

    freezer.tick(timedelta(seconds=10))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "applied"
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued) == ["applied"]  # The window's end is not a transition.

    # A /stat much later is recorded but does not rewrite the job's history.
    await fire(hass, stat_topic(), stat_payload("9f8e7d6"))
    attrs = attributes(hass)
    assert attrs["ota_state"] == "applied"
    assert attrs["installed_version"] == "1.1.0"

    # And a new install is possible again.
    await register(hass, "1.2.0", "bbbb0002")
    await install(hass)
    assert attributes(hass)["ota_version"] == "1.2.0"


@pytest.mark.parametrize(
    "payload",
    [
        report(2, reason="not enough space"),
        report(2, reason="can not download"),
        report(2, reason="can not apply"),
        # The console docs' variant of the reason record.
        json.dumps([{"n": "e", "v": 2}, {"n": "i", "vs": PACKAGE_ID}, {"m": "i", "vs": "X"}]),
    ],
)
async def test_failed_report(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, payload: str
) -> None:
    """e=2 ends the job with the device's reason, tells the user and clears the request."""
    reason = json.loads(payload)[2]["vs"]

    await fire(hass, ota_topic(), payload)

    assert [(e.data["state"], e.data["reason"]) for e in queued] == [("failed", reason)]
    assert publishes(mqtt_mock) == [(ota_topic(), "", 1, True)]
    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "failed"
    assert attrs["ota_reason"] == reason
    assert attrs["installed_version"] == "master@1a2b3c4"
    assert hass.states.get(ENTITY_ID).state == "on"  # The update is still available.
    notifications = hass.data[PN_DOMAIN]
    assert NOTIFICATION_ID in notifications
    message = notifications[NOTIFICATION_ID]["message"]
    assert "Sensor 1" in message
    assert "1.1.0" in message
    assert reason in message


async def test_not_enough_space_then_can_not_download(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any
) -> None:
    """The firmware's second report after "not enough space" does not fail the job twice."""
    await fire(hass, ota_topic(), report(2, reason="not enough space"))
    await fire(hass, ota_topic(), report(2, reason="can not download"))

    assert [(e.data["state"], e.data["reason"]) for e in queued] == [("failed", "not enough space")]
    assert attributes(hass)["ota_reason"] == "not enough space"
    assert publishes(mqtt_mock) == [(ota_topic(), "", 1, True)]


async def test_failure_without_reason(hass: HomeAssistant, queued: list[Any]) -> None:
    """A failed report without a reason still fails the job and says so."""
    await fire(hass, ota_topic(), report(2))

    assert [(e.data["state"], e.data["reason"]) for e in queued] == [("failed", None)]
    assert "no reason given" in hass.data[PN_DOMAIN][NOTIFICATION_ID]["message"]


async def test_unknown_code_ignored(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A code the firmware never sends (e=3, cancelled) leaves the job waiting."""
    await fire(hass, ota_topic(), report(3))
    await fire(hass, ota_topic(), report(3))

    assert attributes(hass)["ota_state"] == "queued"
    assert attributes(hass)["in_progress"] is True
    assert queued == []
    assert publishes(mqtt_mock) == []
    assert _warnings(caplog, "unknown code") == 1


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """Count our warnings that contain `text`."""
    return sum(
        1
        for record in caplog.records
        if record.levelno == logging.WARNING
        and record.name.startswith("custom_components.insighio_ota")
        and text in record.getMessage()
    )


async def test_report_for_other_file_ignored(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A report for a file id no job awaits changes nothing and is logged once."""
    await fire(hass, ota_topic(), report(1, file_id="deadbeef"))
    await fire(hass, ota_topic(), report(1, file_id="deadbeef"))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["installed_version"] == "master@1a2b3c4"
    assert queued == []
    assert publishes(mqtt_mock) == []
    assert _warnings(caplog, "deadbeef") == 1


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


async def test_second_install_refused_while_open(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any, setup_integration: MockConfigEntry
) -> None:
    """One job per device: HA's service and our tracker both refuse a second request."""
    await register(hass, "1.2.0", "bbbb0002")

    with pytest.raises(HomeAssistantError) as exc_info:
        await install(hass)
    assert exc_info.value.translation_key == "update_in_progress"

    tracker = setup_integration.runtime_data.tracker
    package = setup_integration.runtime_data.catalogue.by_version("1.2.0")
    with pytest.raises(HomeAssistantError) as exc_info:
        await tracker.async_request(DEVICE_ID, CONTROL_CHANNEL, package)
    assert exc_info.value.translation_key == "job_open"
    assert exc_info.value.translation_placeholders == {"version": "1.1.0"}

    assert publishes(mqtt_mock) == []
    assert attributes(hass)["ota_version"] == "1.1.0"

    # Still refused while the applied job waits for /stat.
    await fire(hass, ota_topic(), report(1))
    with pytest.raises(HomeAssistantError, match=r"1\.1\.0"):
        await tracker.async_request(DEVICE_ID, CONTROL_CHANNEL, package)


async def test_new_install_after_failure(
    hass: HomeAssistant, queued: list[Any], mqtt_mock: Any
) -> None:
    """A failed job does not block the next attempt."""
    await fire(hass, ota_topic(), report(2, reason="can not apply"))
    mqtt_mock.async_publish.reset_mock()

    await install(hass)

    assert publishes(mqtt_mock) == [(ota_topic(), request_payload(), 1, True)]
    assert attributes(hass)["ota_state"] == "queued"
    assert events_states(queued) == ["failed", "queued"]


async def test_install_unknown_version(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A version no package carries is refused with a translated error, nothing published."""
    await fire(hass, stat_topic(), stat_payload())
    await register(hass)
    mqtt_mock.async_publish.reset_mock()

    with pytest.raises(HomeAssistantError) as exc_info:
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
    await register(hass, "1.0.0", OLD_ID, file_type=".tar.gz")
    await register(hass, "1.1.0")
    mqtt_mock.async_publish.reset_mock()

    await install(hass, "1.0.0")

    assert publishes(mqtt_mock) == [
        (ota_topic(), request_payload(OLD_ID, ".tar.gz"), 1, True),
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
    assert _warnings(caplog, "Could not clear the OTA request") == 1


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


async def test_jobs_survive_restart(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    hass_storage: dict[str, Any],
) -> None:
    """A job queued before a restart is still waiting after it, and a late e=1 finishes it."""
    await hass.config_entries.async_unload(setup_integration.entry_id)
    await hass.async_block_till_done()
    assert f"{DOMAIN}.{setup_integration.entry_id}.jobs" in hass_storage

    assert await hass.config_entries.async_setup(setup_integration.entry_id)
    await hass.async_block_till_done()
    attrs = attributes(hass)
    assert attrs["in_progress"] is True
    assert attrs["ota_state"] == "queued"
    assert attrs["installed_version"] == "master@1a2b3c4"

    # The broker replays our retained request on subscription: still queued.
    await fire(hass, ota_topic(), request_payload(), retain=True)
    assert attributes(hass)["ota_state"] == "queued"

    mqtt_mock.async_publish.reset_mock()
    await fire(hass, ota_topic(), report(1))
    assert publishes(mqtt_mock) == [(ota_topic(), "", 1, True)]
    await fire(hass, stat_topic(), stat_payload("9f8e7d6"))
    attrs = attributes(hass)
    assert attrs["ota_state"] == "verified"
    assert attrs["installed_version"] == "1.1.0"
    assert events_states(queued) == ["applied", "verified"]

    # The confirmed label itself survives the next restart too.
    assert await hass.config_entries.async_reload(setup_integration.entry_id)
    await hass.async_block_till_done()
    assert attributes(hass)["installed_version"] == "1.1.0"
    assert hass.states.get(ENTITY_ID).state == "off"


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

    freezer.tick(VERIFY_WINDOW / 2 + timedelta(seconds=1))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert attrs["ota_state"] == "applied"


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


async def test_software_changed_outside_ha_drops_label(
    hass: HomeAssistant,
    queued: list[Any],
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """After a confirmed package, /stat with other software means the label no longer applies."""
    await fire(hass, ota_topic(), report(1))
    await fire(hass, stat_topic(), stat_payload("9f8e7d6"))
    # Another boot with the same software keeps the label.
    await fire(hass, stat_topic(), stat_payload("9f8e7d6"))
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


async def test_stat_without_commit(hass: HomeAssistant, setup_integration: MockConfigEntry) -> None:
    """A /stat without sw_commit says nothing about the version."""
    await fire(hass, stat_topic(), json.dumps([{"n": "hw_version", "vs": "esp32"}]))

    assert attributes(hass)["installed_version"] is None
    assert hass.states.get(ENTITY_ID).state == "unknown"


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
    assert records["s"]["v"] == package.size == 3987
    assert records["t"]["vs"] == ".tar"


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
