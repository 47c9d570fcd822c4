"""Repair issues: MQTT not set up, stale retained OTA requests, packages the console lost."""

from datetime import timedelta
from typing import Any
from unittest.mock import MagicMock, patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.repairs import repairs_flow_manager
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.const import CONF_RETRY_CAP, DOMAIN
from custom_components.insighio_ota.repairs import (
    ISSUE_MQTT,
    PACKAGE_CHECK_INTERVAL,
    PackageWatch,
    async_raise_mqtt_issue,
    package_issue_id,
    stale_issue_id,
)
from custom_components.insighio_ota.tracker import REPLAY_GRACE

from .conftest import (
    API,
    DEVICE_ID,
    OTHER_DEVICE_ID,
    PACKAGE_BYTES,
    PACKAGE_ID,
    console_device,
    ota_topic,
)
from .helpers import (
    clears,
    fire,
    install,
    register,
    report,
    request_payload,
    restart,
    serve_download,
    set_options,
    setup_entry_allowing_failure,
    tick,
    tracker_of,
)

UNKNOWN_DEVICE_ID = "33333333-3333-4333-8333-333333333333"
NEWER_ID = "5e5e5e5e"
FOREIGN_ID = "abcdef12"


def issue(hass: HomeAssistant, issue_id: str) -> ir.IssueEntry | None:
    """Return one of our issues, None when there is none."""
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id)


async def start_fix(hass: HomeAssistant, issue_id: str) -> dict[str, Any]:
    """Open the fix flow of an issue, as the Repairs page does."""
    assert await async_setup_component(hass, "repairs", {})
    manager = repairs_flow_manager(hass)
    assert manager is not None
    # The context carries the issue id since HA 2026.10, the data before: give both.
    issue_ref = {"issue_id": issue_id}
    return dict(await manager.async_init(DOMAIN, context=issue_ref, data=issue_ref))


async def submit_fix(hass: HomeAssistant, flow_id: str) -> dict[str, Any]:
    """Confirm the fix flow."""
    manager = repairs_flow_manager(hass)
    assert manager is not None
    result = dict(await manager.async_configure(flow_id, {}))
    await hass.async_block_till_done()
    return result


# -- MQTT ---------------------------------------------------------------------------------------


@pytest.fixture
async def mqtt_ready(hass: HomeAssistant, mqtt_mock: Any, mqtt_client_mock: Any) -> Any:
    """Give HA a mocked MQTT; afterwards unload our entries and close the mocked socket."""
    yield mqtt_mock
    for entry in hass.config_entries.async_entries(DOMAIN):
        await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, MagicMock(fileno=lambda: -1))


async def test_mqtt_not_configured_raises_an_issue(
    hass: HomeAssistant, mock_console: AiohttpClientMocker, config_entry: MockConfigEntry
) -> None:
    """Without HA's MQTT integration the entry waits, and an issue says what to do."""
    await setup_entry_allowing_failure(hass, config_entry)

    assert config_entry.state is ConfigEntryState.SETUP_RETRY
    found = issue(hass, ISSUE_MQTT)
    assert found is not None
    assert found.severity is ir.IssueSeverity.ERROR
    assert not found.is_fixable
    await hass.config_entries.async_unload(config_entry.entry_id)


async def test_mqtt_slow_to_start_raises_no_issue(
    hass: HomeAssistant,
    mqtt_ready: Any,
    mock_console: AiohttpClientMocker,
    config_entry: MockConfigEntry,
) -> None:
    """MQTT set up but not ready in time is a passing state: the entry retries, no issue."""
    with patch("homeassistant.components.mqtt.async_wait_for_mqtt_client", return_value=False):
        await setup_entry_allowing_failure(hass, config_entry)

    assert config_entry.state is ConfigEntryState.SETUP_RETRY
    assert issue(hass, ISSUE_MQTT) is None


async def test_mqtt_issue_goes_once_an_entry_loads(
    hass: HomeAssistant,
    mqtt_ready: Any,
    mock_console: AiohttpClientMocker,
    config_entry: MockConfigEntry,
) -> None:
    """MQTT is there now: the issue is solved."""
    async_raise_mqtt_issue(hass)

    await setup_entry_allowing_failure(hass, config_entry)

    assert config_entry.state is ConfigEntryState.LOADED
    assert issue(hass, ISSUE_MQTT) is None


# -- stale retained requests --------------------------------------------------------------------


@pytest.fixture
def console_devices() -> list[dict[str, Any]]:
    """Two devices of the project, and one the account lists on another project's channel."""
    elsewhere = console_device("44444444-4444-4444-8444-444444444444", "Sensor 4")
    elsewhere["metadata"]["controlChannel"] = "c1c1c1c1-0000-4000-8000-000000000003"
    return [
        console_device(DEVICE_ID, "Sensor 1"),
        console_device(OTHER_DEVICE_ID, "Sensor 2"),
        elsewhere,
    ]


async def ended_then_new_job(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Give Sensor 1 an ended job for PACKAGE_ID, then an open one for NEWER_ID."""
    await register(hass, "1.1.0")
    await register(hass, "1.2.0", file_id=NEWER_ID)
    await install(hass, "1.1.0")
    await tracker_of(entry).async_cancel(DEVICE_ID)
    await install(hass, "1.2.0")


async def replay_stale(hass: HomeAssistant) -> None:
    """Replay, as the broker does on subscription, one stale request of each kind."""
    await fire(hass, ota_topic(DEVICE_ID), request_payload(PACKAGE_ID), retain=True)
    await fire(hass, ota_topic(OTHER_DEVICE_ID), request_payload(FOREIGN_ID), retain=True)
    await fire(hass, ota_topic(UNKNOWN_DEVICE_ID), request_payload(FOREIGN_ID), retain=True)
    wrong_channel = ota_topic("44444444-4444-4444-8444-444444444444")
    await fire(hass, wrong_channel, request_payload(FOREIGN_ID), retain=True)


async def test_stale_requests_raise_one_issue_and_the_fix_clears_them(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Every stale request is listed in one issue, once the replay is over; the fix clears."""
    await ended_then_new_job(hass, setup_integration)
    # A fresh subscription, as after a restart: the broker replays what it holds.
    await restart(hass, setup_integration)
    await replay_stale(hass)
    issue_id = stale_issue_id(setup_integration.entry_id)
    assert issue(hass, issue_id) is None  # Not before the replay burst is over.

    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))

    found = issue(hass, issue_id)
    assert found is not None
    assert found.is_fixable
    assert found.translation_key == "stale_requests"
    placeholders = found.translation_placeholders
    assert placeholders["count"] == "4"
    assert placeholders["ended"] == f"- Sensor 1 (`{DEVICE_ID}`): `{PACKAGE_ID}`"
    assert placeholders["not_ours"] == f"- Sensor 2 (`{OTHER_DEVICE_ID}`): `{FOREIGN_ID}`"
    assert f"- `{UNKNOWN_DEVICE_ID}`: `{FOREIGN_ID}`" in placeholders["unknown_device"]
    # The open job was not touched: the replay of another file is not its confirmation.
    assert tracker_of(setup_integration).job(DEVICE_ID).file_id == NEWER_ID
    assert tracker_of(setup_integration).job(DEVICE_ID).state == "queued"

    result = await start_fix(hass, issue_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "confirm"
    assert result["description_placeholders"]["count"] == "4"
    result = await submit_fix(hass, result["flow_id"])

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert issue(hass, issue_id) is None
    for device_id in (DEVICE_ID, OTHER_DEVICE_ID, UNKNOWN_DEVICE_ID):
        assert clears(mqtt_mock, ota_topic(device_id)) >= 1
    assert tracker_of(setup_integration).stale_requests == []


async def test_no_stale_requests_no_issue(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Our open job's own request, reports, clears and junk are not stale requests."""
    await register(hass)
    await install(hass)
    await fire(hass, ota_topic(DEVICE_ID), request_payload(), retain=True)
    await fire(hass, ota_topic(OTHER_DEVICE_ID), report(1, FOREIGN_ID), retain=True)
    await fire(hass, ota_topic(OTHER_DEVICE_ID), "not json", retain=True)
    await fire(hass, ota_topic(OTHER_DEVICE_ID), "", retain=True)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))

    assert tracker_of(setup_integration).stale_requests == []
    assert issue(hass, stale_issue_id(setup_integration.entry_id)) is None
    assert tracker_of(setup_integration).job(DEVICE_ID).on_broker


async def test_live_clear_or_request_replaces_a_stale_request(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A clear or a new request on the topic replaces what the broker held; a report does not."""
    await fire(hass, ota_topic(OTHER_DEVICE_ID), request_payload(FOREIGN_ID), retain=True)
    await fire(hass, ota_topic(UNKNOWN_DEVICE_ID), request_payload(FOREIGN_ID), retain=True)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    issue_id = stale_issue_id(setup_integration.entry_id)
    assert issue(hass, issue_id).translation_placeholders["count"] == "2"

    # The device fails to download it: the request stays.
    await fire(hass, ota_topic(OTHER_DEVICE_ID), report(2, FOREIGN_ID, "can not download"))
    await fire(hass, ota_topic(UNKNOWN_DEVICE_ID), request_payload(NEWER_ID))
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    found = issue(hass, issue_id)
    assert found.translation_placeholders["count"] == "1"
    assert found.translation_placeholders["unknown_device"] == "-"

    await fire(hass, ota_topic(OTHER_DEVICE_ID), "")
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    assert issue(hass, issue_id) is None


async def test_unload_drops_the_issue(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Unloaded, the entry cannot fix anything: the issue goes (the next load finds them again)."""
    await fire(hass, ota_topic(OTHER_DEVICE_ID), request_payload(FOREIGN_ID), retain=True)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    await fire(hass, ota_topic(UNKNOWN_DEVICE_ID), request_payload(FOREIGN_ID), retain=True)

    assert await hass.config_entries.async_unload(setup_integration.entry_id)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))

    assert issue(hass, stale_issue_id(setup_integration.entry_id)) is None


async def test_fix_flow_entry_not_loaded_or_publish_failed(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A failed publish keeps the issue; an entry unloaded meanwhile aborts the fix."""
    await fire(hass, ota_topic(OTHER_DEVICE_ID), request_payload(FOREIGN_ID), retain=True)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    issue_id = stale_issue_id(setup_integration.entry_id)

    mqtt_mock.async_publish.side_effect = HomeAssistantError("not connected")
    result = await start_fix(hass, issue_id)
    result = await submit_fix(hass, result["flow_id"])
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "publish_failed"
    assert issue(hass, issue_id) is not None
    mqtt_mock.async_publish.side_effect = None

    result = await start_fix(hass, issue_id)
    assert await hass.config_entries.async_unload(setup_integration.entry_id)
    result = await submit_fix(hass, result["flow_id"])
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"


# -- packages the console no longer serves ------------------------------------------------------


async def test_package_the_console_lost_raises_an_issue_and_the_fix_forgets_it(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
) -> None:
    """A device gave up downloading; HA checks, the console has no such file: an issue."""
    await set_options(hass, setup_integration, **{CONF_RETRY_CAP: 1})
    await register(hass)
    await install(hass)
    mock_console.clear_requests()
    mock_console.get(f"{API}/packages/download", status=404)

    await fire(hass, ota_topic(), report(2, reason="can not download"))
    await hass.async_block_till_done()

    issue_id = package_issue_id(setup_integration.entry_id, PACKAGE_ID)
    found = issue(hass, issue_id)
    assert found is not None
    assert found.translation_placeholders == {"version": "1.1.0", "file_id": PACKAGE_ID}

    result = await start_fix(hass, issue_id)
    assert result["description_placeholders"]["version"] == "1.1.0"
    result = await submit_fix(hass, result["flow_id"])

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert setup_integration.runtime_data.catalogue.by_file_id(PACKAGE_ID) is None
    assert issue(hass, issue_id) is None


async def test_daily_check_raises_and_clears(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Once a day every package is checked; a console that fails proves nothing."""
    await register(hass)
    issue_id = package_issue_id(setup_integration.entry_id, PACKAGE_ID)

    mock_console.clear_requests()
    mock_console.get(f"{API}/packages/download", status=503)
    await tick(hass, freezer, PACKAGE_CHECK_INTERVAL)
    assert issue(hass, issue_id) is None

    mock_console.clear_requests()
    mock_console.get(f"{API}/packages/download", status=404)
    await tick(hass, freezer, PACKAGE_CHECK_INTERVAL)
    assert issue(hass, issue_id) is not None

    mock_console.clear_requests()
    mock_console.get(f"{API}/packages/download", content=PACKAGE_BYTES)
    await tick(hass, freezer, PACKAGE_CHECK_INTERVAL)
    assert issue(hass, issue_id) is None


async def test_package_issue_goes_with_the_package_or_the_entry(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Removing the package, or unloading the entry, drops its issue."""
    await register(hass)
    await register(hass, "1.2.0", file_id=NEWER_ID)
    mock_console.clear_requests()
    mock_console.get(f"{API}/packages/download", status=404)
    await tick(hass, freezer, PACKAGE_CHECK_INTERVAL)
    first = package_issue_id(setup_integration.entry_id, PACKAGE_ID)
    second = package_issue_id(setup_integration.entry_id, NEWER_ID)
    assert issue(hass, first) is not None
    assert issue(hass, second) is not None

    await hass.services.async_call(DOMAIN, "remove_package", {"file_id": PACKAGE_ID}, blocking=True)
    assert issue(hass, first) is None
    assert issue(hass, second) is not None

    assert await hass.config_entries.async_unload(setup_integration.entry_id)
    await hass.async_block_till_done()
    assert issue(hass, second) is None


async def test_package_fix_for_a_package_already_removed(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Removed meanwhile (another window, the action): the fix has nothing left to do."""
    await register(hass)
    mock_console.clear_requests()
    mock_console.get(f"{API}/packages/download", status=404)
    await tick(hass, freezer, PACKAGE_CHECK_INTERVAL)
    issue_id = package_issue_id(setup_integration.entry_id, PACKAGE_ID)

    result = await start_fix(hass, issue_id)
    await setup_integration.runtime_data.catalogue.async_remove(PACKAGE_ID)
    result = await submit_fix(hass, result["flow_id"])

    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_checks_need_a_device_and_a_registered_package(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
) -> None:
    """No device to download with: no check. A failure of an unknown package: no check."""
    await set_options(hass, setup_integration, **{CONF_RETRY_CAP: 1})
    await register(hass)
    await install(hass)
    await setup_integration.runtime_data.catalogue.async_remove(PACKAGE_ID)
    mock_console.clear_requests()
    await fire(hass, ota_topic(), report(2, reason="can not download"))
    assert mock_console.call_count == 0

    serve_download(mock_console, content=PACKAGE_BYTES)
    await register(hass, "1.2.0", file_id=NEWER_ID)
    mock_console.clear_requests()
    watch = PackageWatch(hass, setup_integration)
    with patch.object(setup_integration.runtime_data.coordinator, "data", {}):
        await watch.async_check()
    assert mock_console.call_count == 0
