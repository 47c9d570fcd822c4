"""Adversarial tests: inputs and orders of events the integration must survive.

Every test here names one way to break the integration and what should happen instead.
"""

import asyncio
import json
import logging
from typing import Any
from unittest.mock import MagicMock

import aiohttp
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.const import DOMAIN
from simulator.device import parse_ota_request

from .conftest import (
    API,
    API_KEY,
    DATA_CHANNEL,
    DEVICE_ID,
    DEVICE_KEY,
    OTHER_DEVICE_ID,
    PACKAGE_ID,
    console_device,
    ota_topic,
    stat_payload,
    stat_topic,
)
from .helpers import (
    ENTITY_ID,
    clears,
    install,
    register,
    report,
    request_payload,
    setup_entry_allowing_failure,
)

OTHER_CONTROL_CHANNEL = "c1c1c1c1-0000-4000-8000-000000000003"


async def teardown_entry(
    hass: HomeAssistant, config_entry: MockConfigEntry, mqtt_client_mock: Any
) -> None:
    """Unload as the shared fixture does."""
    if config_entry.state is ConfigEntryState.LOADED:
        await hass.config_entries.async_unload(config_entry.entry_id)
        await hass.async_block_till_done()
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, MagicMock(fileno=lambda: -1))


# --- MQTT handlers must never let an exception escape into HA ------------------------------


@pytest.mark.parametrize("topic", [ota_topic(), stat_topic()])
async def test_deeply_nested_json_does_not_escape_the_handler(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
    topic: str,
) -> None:
    """A deeply nested JSON payload raises RecursionError, which `_load_pack` does not catch.

    HA's MQTT client then logs an ERROR with a traceback and the whole payload.
    """
    caplog.set_level(logging.DEBUG)
    async_fire_mqtt_message(hass, topic, "[" * 100_000 + "]" * 100_000)
    await hass.async_block_till_done()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage()[:200] for r in errors]


# --- state corruption ----------------------------------------------------------------------


async def test_whitespace_release_notes_do_not_break_the_entity(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Release notes of only whitespace make `release_summary` raise IndexError.

    `update.py` checks `not latest.release_notes` before stripping, then takes
    `.strip().splitlines()[0]` of an empty list; every state write of every entity fails.
    """
    await register(hass, release_notes="  \n  ")
    state = hass.states.get(ENTITY_ID)
    assert state is not None
    assert state.attributes["latest_version"] == "1.1.0"
    assert state.attributes["release_summary"] is None


async def test_lost_applied_report_is_recovered_from_clear_and_stat(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Reports are not retained: if the e=1 is lost, the device's clear and /stat must end the job.

    protocol.md: "Recover from the retained request's presence and from the next /stat".
    Regression test (passes): the job must not stay in progress forever.
    """
    async_fire_mqtt_message(hass, stat_topic(), stat_payload("1a2b3c4"))
    await register(hass)
    await install(hass)
    async_fire_mqtt_message(hass, ota_topic(), request_payload())  # our echo
    await hass.async_block_till_done()
    # The device applied; its e=1 was lost (HA was restarting), then it cleared and rebooted.
    async_fire_mqtt_message(hass, ota_topic(), "")
    async_fire_mqtt_message(hass, stat_topic(), stat_payload("9f8e7d6"))
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY_ID).attributes["in_progress"] is False


async def test_stat_without_sw_commit_keeps_the_installed_label(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A /stat that lacks sw_commit is taken as "software changed outside HA".

    `_async_on_stat_message` compares None with the confirmed software and forgets the label:
    installed_version drops from "1.1.0" to None and HA offers the update again.
    """
    async_fire_mqtt_message(hass, stat_topic(), stat_payload("1a2b3c4"))
    await register(hass)
    await install(hass)
    async_fire_mqtt_message(hass, ota_topic(), report(1))
    async_fire_mqtt_message(hass, stat_topic(), stat_payload("9f8e7d6"))
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY_ID).attributes["installed_version"] == "1.1.0"

    async_fire_mqtt_message(
        hass,
        stat_topic(),
        json.dumps([{"v": 900000, "n": "free_flash"}, {"vs": "x", "n": "serial"}]),
    )
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY_ID).attributes["installed_version"] == "1.1.0"


async def test_null_in_an_unknown_record_does_not_drop_the_report(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """protocol.md: unknown records are ignored; a `null` in one drops the whole e=1 report."""
    await register(hass)
    await install(hass)
    async_fire_mqtt_message(
        hass,
        ota_topic(),
        json.dumps([{"v": 1, "n": "e"}, {"vs": PACKAGE_ID, "n": "i"}, {"v": None, "n": "extra"}]),
    )
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY_ID).attributes["ota_state"] == "applied"


async def test_null_in_an_unknown_stat_record_does_not_drop_the_stat(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A /stat with one `null` extra record is dropped whole: the applied job is never verified."""
    await register(hass)
    await install(hass)
    async_fire_mqtt_message(hass, ota_topic(), report(1))
    records = json.loads(stat_payload("9f8e7d6"))
    records.append({"vs": None, "n": "cell_imsi"})
    async_fire_mqtt_message(hass, stat_topic(), json.dumps(records))
    await hass.async_block_till_done()
    state = hass.states.get(ENTITY_ID)
    assert state.attributes["ota_state"] == "verified"
    assert state.attributes["in_progress"] is False


async def test_retained_request_of_an_answered_job_is_cleared_again(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """If our clear did not stick, the broker keeps replaying the request: clear it again.

    A request that survives our clear (a failed publish, a bridge that was down) makes the
    device re-apply or retry it at every wake.
    """
    await register(hass)
    await install(hass)
    async_fire_mqtt_message(hass, ota_topic(), report(2, reason="can not apply"))
    await hass.async_block_till_done()
    assert clears(mqtt_mock, ota_topic()) == 1
    # The request is still on the broker: a replay (e.g. on re-subscription) carries the
    # retain flag. A live echo without it is a fresh publish, maybe somebody else's: left alone.
    async_fire_mqtt_message(hass, ota_topic(), request_payload())
    await hass.async_block_till_done()
    assert clears(mqtt_mock, ota_topic()) == 1
    # HA restarts: the new subscription gets the broker's retained copy.
    await hass.config_entries.async_unload(setup_integration.entry_id)
    assert await hass.config_entries.async_setup(setup_integration.entry_id)
    await hass.async_block_till_done()
    async_fire_mqtt_message(hass, ota_topic(), request_payload(), retain=True)
    await hass.async_block_till_done()
    assert clears(mqtt_mock, ota_topic()) == 2


def _two_projects() -> list[dict[str, Any]]:
    """Two devices in two projects (two control channels)."""
    other = console_device(OTHER_DEVICE_ID, "Sensor 2", key="b8b8b8b8-dead-4bee-8f00-0000000000ee")
    other["metadata"] = {"dataChannel": DATA_CHANNEL, "controlChannel": OTHER_CONTROL_CHANNEL}
    return [console_device(DEVICE_ID, "Sensor 1"), other]


@pytest.mark.parametrize("console_devices", [_two_projects()])
async def test_report_on_another_projects_channel_is_ignored(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A report for device A on project B's control channel moves A's job.

    `_known_device_id` checks only that the device id is listed, not that the topic's control
    channel is that device's: any device of project B can forge A's reports.
    """
    await register(hass)
    await install(hass)
    forged = f"channels/{OTHER_CONTROL_CHANNEL}/messages/{DEVICE_ID}/ota"
    async_fire_mqtt_message(hass, forged, report(1))
    await hass.async_block_till_done()
    state = hass.states.get(ENTITY_ID)
    assert state.attributes["ota_state"] == "queued"
    assert state.attributes["installed_version"] != "1.1.0"


# --- console answers of odd shapes -----------------------------------------------------------


@pytest.mark.parametrize(
    "console_devices",
    [
        [
            console_device(DEVICE_ID, "Sensor 1"),
            {
                "id": OTHER_DEVICE_ID,
                "name": "Odd",
                "key": DEVICE_KEY,
                "metadata": {"dataChannel": DATA_CHANNEL, "controlChannel": "bad/channel"},
            },
        ]
    ],
)
async def test_one_device_with_an_odd_channel_does_not_break_setup(
    hass: HomeAssistant,
    mqtt_mock: Any,
    mqtt_client_mock: Any,
    mock_console: AiohttpClientMocker,
    config_entry: MockConfigEntry,
) -> None:
    """A console entry whose controlChannel holds '/' (or '+', '#') fails the whole entry.

    `control_subscription` raises ProtocolError in `async_setup_entry`: no device gets an entity.
    """
    await setup_entry_allowing_failure(hass, config_entry)
    try:
        assert config_entry.state is ConfigEntryState.LOADED
        assert hass.states.get(ENTITY_ID) is not None
    finally:
        await teardown_entry(hass, config_entry, mqtt_client_mock)


# --- restart with corrupted storage ----------------------------------------------------------


@pytest.mark.parametrize(
    "jobs",
    [
        {DEVICE_ID: {"state": "bogus"}},
        [],
        {
            DEVICE_ID: {
                "device_id": DEVICE_ID,
                "control_channel": "c",
                "file_id": PACKAGE_ID,
                "version": "1.1.0",
                "state": "queued",
                "requested_at": "2026-01-01T00:00:00+00:00",
                "updated_at": "2026-01-01T00:00:00+00:00",
                "field_of_a_newer_version": 1,
            }
        },
    ],
    ids=["unknown-state", "jobs-not-a-dict", "state-from-a-newer-version"],
)
async def test_corrupted_job_storage_does_not_break_setup(
    *,
    hass: HomeAssistant,
    mqtt_mock: Any,
    mqtt_client_mock: Any,
    mock_console: AiohttpClientMocker,
    config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    jobs: Any,
) -> None:
    """A jobs file HA cannot read leaves the entry in SETUP_ERROR with a raw traceback.

    `OtaTracker.async_load` builds `OtaJob(**job)` / `JobState(...)` unguarded; the user loses
    every device's entity until they find and delete `.storage/insighio_ota.<entry>.jobs`.
    """
    hass_storage[f"{DOMAIN}.{config_entry.entry_id}.jobs"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{config_entry.entry_id}.jobs",
        "data": {"jobs": jobs, "devices": {}},
    }
    await setup_entry_allowing_failure(hass, config_entry)
    try:
        assert config_entry.state is ConfigEntryState.LOADED
        assert hass.states.get(ENTITY_ID) is not None
    finally:
        await teardown_entry(hass, config_entry, mqtt_client_mock)


# --- the register_package action ------------------------------------------------------------


@pytest.mark.parametrize("file_id", ["4f1c&dk=x", "4f1c 2a9e", "4f1c#2a9e", "4f1c?2a9e", "../boot"])
async def test_register_refuses_file_ids_the_firmware_cannot_use(
    hass: HomeAssistant, setup_integration: MockConfigEntry, file_id: str
) -> None:
    """The firmware formats `fuid={}` into the URL unquoted and writes `<root> + fileId + type`.

    HA's verification download quotes the id (yarl), so it succeeds, while the device would
    request a different file (or a broken URL) or write outside its root. Such ids must be refused.
    """
    with pytest.raises(HomeAssistantError):
        await register(hass, file_id=file_id)


# --- concurrency -----------------------------------------------------------------------------


async def test_two_concurrent_installs_publish_one_request(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Two installs at once both pass the in_progress check before either opens its job.

    `OtaTracker.async_request` checks, then awaits the publish, then stores the job: two
    requests go out and the job may name the package the broker does not hold.
    """
    await register(hass, file_id="0ld0ld00", version="1.0.0")
    await register(hass)

    async def slow_publish(*_args: Any, **_kwargs: Any) -> None:
        await asyncio.sleep(0.01)

    mqtt_mock.async_publish.side_effect = slow_publish
    mqtt_mock.async_publish.reset_mock()
    results = await asyncio.gather(
        install(hass, version="1.0.0"), install(hass, version="1.1.0"), return_exceptions=True
    )
    requests = [c for c in mqtt_mock.async_publish.call_args_list if c.args[1]]
    assert len(requests) == 1, results


# --- the simulator must behave like protocol.md ----------------------------------------------


def test_simulator_ignores_e_as_the_string_zero() -> None:
    """protocol.md: `"0"` as e is ignored: the firmware reads `e` from `v` only.

    It compares `str(e) == "0"`, so a string "0" under `vs` (where SenML puts strings) never
    passes.
    """
    payload = json.dumps(
        [
            {"n": "e", "vs": "0"},
            {"n": "i", "vs": PACKAGE_ID},
            {"n": "t", "vs": ".tar"},
            {"n": "s", "v": 3987},
        ]
    ).encode()
    assert parse_ota_request(payload) is None


# --- secrets (passing regression test) -------------------------------------------------------


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every log record at DEBUG from before the entry is set up."""
    caplog.set_level(logging.DEBUG)
    return caplog


async def test_no_secret_reaches_a_log_record_or_an_error(
    debug_logs: pytest.LogCaptureFixture,
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    mqtt_mock: Any,
) -> None:
    """Set-up, register (ok and failing), install, reports and /stat: no key, no `dk=` anywhere."""
    await register(hass)
    await install(hass)
    async_fire_mqtt_message(hass, ota_topic(), request_payload())
    async_fire_mqtt_message(hass, ota_topic(), report(2, reason="can not download"))
    async_fire_mqtt_message(hass, ota_topic(), "garbage")
    async_fire_mqtt_message(hass, stat_topic(), stat_payload())
    await hass.async_block_till_done()
    errors: list[BaseException] = []
    for exc in (
        aiohttp.ClientConnectionError(f"{API}/packages/download?dk={DEVICE_KEY}"),
        TimeoutError(f"dk={DEVICE_KEY}"),
    ):
        mock_console.clear_requests()
        mock_console.get(f"{API}/packages/download", exc=exc)
        with pytest.raises(HomeAssistantError) as caught:
            await register(hass, file_id="deadbeef", version="9.9.9")
        errors.append(caught.value)
    texts = [record.getMessage() for record in debug_logs.records]
    texts += [str(record.exc_info) for record in debug_logs.records if record.exc_info]
    for err in errors:
        chain: BaseException | None = err
        while chain is not None:
            texts.append(repr(chain))
            chain = chain.__cause__ or chain.__context__
    for text in texts:
        assert DEVICE_KEY not in text
        assert API_KEY not in text
        assert "dk=" not in text


async def test_cancelled_report_from_the_device_ends_the_job(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """e=3 is only defined in a firmware comment; should a device send it, the job ends."""
    await register(hass)
    await install(hass)
    async_fire_mqtt_message(hass, ota_topic(), report(3))
    await hass.async_block_till_done()

    state = hass.states.get("update.sensor_1_firmware")
    assert state is not None
    assert state.attributes["ota_state"] == "cancelled"
    assert state.attributes["in_progress"] is False
    assert clears(mqtt_mock, ota_topic()) == 1
