"""The options flow: update settings, and the package catalogue without reloading the entry."""

import io
import json
from pathlib import Path
import tarfile
from typing import Any
from unittest.mock import patch

from homeassistant.config_entries import ConfigEntryState, ConfigFlowResult
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from homeassistant.exceptions import HomeAssistantError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.catalogue import PackageCatalogue
from custom_components.insighio_ota.const import (
    CONF_MIN_BATTERY_MV,
    CONF_NOTIFY_FAILURES,
    CONF_RETRY_CAP,
    CONF_SEEN_WITHIN_HOURS,
    CONF_TIMEOUT_WAKES,
    CONF_WINDOW_END,
    CONF_WINDOW_START,
    DEFAULT_MIN_BATTERY_MV,
    DEFAULT_NOTIFY_FAILURES,
    DEFAULT_RETRY_CAP,
    DEFAULT_SEEN_WITHIN_HOURS,
    DEFAULT_TIMEOUT_WAKES,
)

from .conftest import APP_FILES, PACKAGE_BYTES, PACKAGE_ID, ustar_package
from .helpers import serve_download

ENTITY_ID = "update.sensor_1_firmware"
TRANSLATIONS = json.loads(
    (Path(__file__).parents[1] / "custom_components/insighio_ota/translations/en.json").read_text()
)["options"]
SETTINGS = {
    CONF_NOTIFY_FAILURES: False,
    CONF_RETRY_CAP: 5,
    CONF_TIMEOUT_WAKES: 12,
    CONF_SEEN_WITHIN_HOURS: 0,
    CONF_MIN_BATTERY_MV: 3400,
}


def assert_translated(result: ConfigFlowResult) -> None:
    """Every step, menu option, error and abort reason the flow shows has an English text."""
    if result["type"] is FlowResultType.FORM:
        step = TRANSLATIONS["step"][result["step_id"]]
        for key in result["data_schema"].schema:
            assert str(key) in step["data"]
            assert str(key) in step["data_description"]
        for error in (result["errors"] or {}).values():
            assert error in TRANSLATIONS["error"]
    elif result["type"] is FlowResultType.MENU:
        for option in result["menu_options"]:
            assert option in TRANSLATIONS["step"]["init"]["menu_options"]
    elif result["type"] is FlowResultType.ABORT:
        assert result["reason"] in TRANSLATIONS["abort"]


async def start(hass: HomeAssistant, entry: MockConfigEntry) -> ConfigFlowResult:
    """Open the options flow; return its menu."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    assert_translated(result)
    return result


async def choose(hass: HomeAssistant, result: ConfigFlowResult, step: str) -> ConfigFlowResult:
    """Pick a menu entry."""
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": step}
    )
    assert_translated(result)
    return result


async def submit(
    hass: HomeAssistant, result: ConfigFlowResult, user_input: dict[str, Any]
) -> ConfigFlowResult:
    """Submit a form."""
    result = await hass.config_entries.options.async_configure(result["flow_id"], user_input)
    await hass.async_block_till_done()
    assert_translated(result)
    return result


def catalogue_of(entry: MockConfigEntry) -> PackageCatalogue:
    """Return the entry's package catalogue."""
    return entry.runtime_data.catalogue


async def register(hass: HomeAssistant, file_id: str, version: str, **data: Any) -> None:
    """Register a package by action (the console serves the default ustar package)."""
    await hass.services.async_call(
        "insighio_ota",
        "register_package",
        {"file_id": file_id, "version": version, **data},
        blocking=True,
    )


# --- menu and settings -----------------------------------------------------------------------


async def test_menu_follows_what_applies(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Package steps are offered once the entry is loaded; edit and remove once there is one."""
    result = await start(hass, setup_integration)
    assert result["menu_options"] == ["settings", "add_package"]

    await register(hass, PACKAGE_ID, "1.0")
    result = await start(hass, setup_integration)
    assert result["menu_options"] == ["settings", "add_package", "edit_package", "remove_package"]


async def test_menu_of_an_entry_not_loaded(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> None:
    """Without a loaded entry only the settings can change."""
    config_entry.add_to_hass(hass)

    result = await start(hass, config_entry)

    assert result["menu_options"] == ["settings"]


async def test_settings_defaults_and_save(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """The form shows the defaults; the answers are saved as integers, without a reload."""
    runtime = setup_integration.runtime_data
    result = await choose(hass, await start(hass, setup_integration), "settings")
    assert result["type"] is FlowResultType.FORM
    # The maintenance window has no default (none); its fields are optional.
    defaults = {
        str(key): key.default()
        for key in result["data_schema"].schema
        if str(key) not in (CONF_WINDOW_START, CONF_WINDOW_END)
    }
    assert defaults == {
        CONF_NOTIFY_FAILURES: DEFAULT_NOTIFY_FAILURES,
        CONF_RETRY_CAP: DEFAULT_RETRY_CAP,
        CONF_TIMEOUT_WAKES: DEFAULT_TIMEOUT_WAKES,
        CONF_SEEN_WITHIN_HOURS: DEFAULT_SEEN_WITHIN_HOURS,
        CONF_MIN_BATTERY_MV: DEFAULT_MIN_BATTERY_MV,
    }

    result = await submit(hass, result, {**SETTINGS, CONF_RETRY_CAP: 5.0})

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert setup_integration.options == {
        **SETTINGS,
        CONF_WINDOW_START: None,
        CONF_WINDOW_END: None,
    }
    assert all(type(setup_integration.options[key]) is int for key in SETTINGS if key[0] != "n")
    # The tracker reads the options at every use: the entry is not reloaded.
    assert setup_integration.state is ConfigEntryState.LOADED
    assert setup_integration.runtime_data is runtime

    # Saved values are the next defaults.
    result = await choose(hass, await start(hass, setup_integration), "settings")
    assert {
        str(key): key.default()
        for key in result["data_schema"].schema
        if str(key) not in (CONF_WINDOW_START, CONF_WINDOW_END)
    } == SETTINGS


@pytest.mark.parametrize(
    "change",
    [
        {CONF_RETRY_CAP: 0},
        {CONF_RETRY_CAP: 21},
        {CONF_TIMEOUT_WAKES: 101},
        {CONF_SEEN_WITHIN_HOURS: 721},
        {CONF_MIN_BATTERY_MV: 5001},
        {CONF_MIN_BATTERY_MV: -1},
    ],
)
async def test_settings_out_of_range(
    hass: HomeAssistant, setup_integration: MockConfigEntry, change: dict[str, int]
) -> None:
    """Values outside their range are refused by the form."""
    result = await choose(hass, await start(hass, setup_integration), "settings")

    with pytest.raises(InvalidData):
        await submit(hass, result, {**SETTINGS, **change})
    assert setup_integration.options == {}


async def test_settings_refuse_fractions(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """0.5 hours is not quietly 0 (which turns the guard off): each such field is an error."""
    result = await choose(hass, await start(hass, setup_integration), "settings")

    result = await submit(
        hass, result, {**SETTINGS, CONF_RETRY_CAP: 2.5, CONF_SEEN_WITHIN_HOURS: 0.5}
    )

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_RETRY_CAP: "not_whole", CONF_SEEN_WITHIN_HOURS: "not_whole"}
    assert setup_integration.options == {}
    # The refused fields show the stored values again, even when what came was no number.
    result = await submit(hass, result, {**SETTINGS, CONF_RETRY_CAP: float("nan")})
    assert result["errors"] == {CONF_RETRY_CAP: "not_whole"}
    defaults = {
        str(key): key.default()
        for key in result["data_schema"].schema
        if str(key) not in (CONF_WINDOW_START, CONF_WINDOW_END)
    }
    assert defaults[CONF_RETRY_CAP] == DEFAULT_RETRY_CAP


# --- add a package ---------------------------------------------------------------------------


ADD = {"file_id": f" {PACKAGE_ID} ", "file_type": ".tar", "version": "1.2.0"}


async def test_add_package(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
) -> None:
    """The package is downloaded and checked as by the action, stored, and no reload happens."""
    runtime = setup_integration.runtime_data
    serve_download(
        mock_console,
        content=ustar_package({**APP_FILES, "version.py": b'sw_commit = "4f1c2a9"\n'}),
    )
    result = await choose(hass, await start(hass, setup_integration), "add_package")
    assert result["type"] is FlowResultType.FORM

    result = await submit(
        hass,
        result,
        {**ADD, "release_notes": "# Faster\nDetails.", "hardware": ["esp32s3"]},
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    [package] = catalogue_of(setup_integration).packages
    assert (package.file_id, package.version, package.hardware, package.sw_commit) == (
        PACKAGE_ID,
        "1.2.0",
        ("esp32s3",),
        "4f1c2a9",
    )
    assert package.release_notes == "# Faster\nDetails."
    assert mock_console.call_count == 1
    assert setup_integration.options == {}
    assert setup_integration.runtime_data is runtime


def pax_package() -> bytes:
    """Return a tar in Python's default PAX format."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("main.py")
        info.pax_headers = {"comment": "desktop tar"}
        archive.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("response", "user_input", "errors", "placeholder"),
    [
        (
            {"content": pax_package()},
            {},
            {"base": "package_format"},
            ("error", "member '././@PaxHeader' is a PAX extended header"),
        ),
        ({"status": 404}, {}, {"file_id": "package_not_found"}, ("file_id", PACKAGE_ID)),
        ({"status": 403}, {}, {"base": "download_refused"}, ("file_id", PACKAGE_ID)),
        ({"status": 500}, {}, {"base": "console_unavailable"}, None),
        ({}, {"file_id": "a/b"}, {"file_id": "invalid_package"}, None),
        ({}, {"version": "   "}, {"version": "invalid_version"}, None),
        ({}, {"version": "v" * 65}, {"version": "invalid_version"}, None),
        ({}, {"sw_commit": "c" * 65}, {"sw_commit": "invalid_sw_commit"}, None),
    ],
)
async def test_add_package_errors_in_the_form(
    hass: HomeAssistant,
    *,
    setup_integration: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    response: dict[str, Any],
    user_input: dict[str, Any],
    errors: dict[str, str],
    placeholder: tuple[str, str] | None,
) -> None:
    """Refusals come back as translated form errors; fixing the input then succeeds."""
    if response:
        serve_download(mock_console, **response)
    result = await choose(hass, await start(hass, setup_integration), "add_package")

    result = await submit(hass, result, {**ADD, **user_input})

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    if placeholder is not None:
        name, text = placeholder
        assert text in result["description_placeholders"][name]
    assert catalogue_of(setup_integration).packages == []

    serve_download(mock_console, content=PACKAGE_BYTES)
    result = await submit(hass, result, ADD)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert len(catalogue_of(setup_integration).packages) == 1


async def test_add_package_version_taken(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A label of another package is shown on the version field, naming that package."""
    await register(hass, "aaaa0001", "1.2.0")
    result = await choose(hass, await start(hass, setup_integration), "add_package")

    result = await submit(hass, result, ADD)

    assert result["errors"] == {"version": "version_taken"}
    assert result["description_placeholders"] == {"version": "1.2.0", "file_id": "aaaa0001"}


async def test_unexpected_error_without_translation(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """An error the shared function did not translate still shows in the form."""
    result = await choose(hass, await start(hass, setup_integration), "add_package")

    with patch(
        "custom_components.insighio_ota.config_flow.async_register_package",
        side_effect=HomeAssistantError("boom"),
    ):
        result = await submit(hass, result, ADD)

    assert result["errors"] == {"base": "unknown"}


# --- edit and remove -------------------------------------------------------------------------


async def test_edit_package(hass: HomeAssistant, setup_integration: MockConfigEntry) -> None:
    """Choose a package, see its values, change them and its position."""
    await register(hass, "aaaa0001", "1.0", release_notes="Old", sw_commit="abc1234")
    await register(hass, "aaaa0002", "2.0", hardware=["esp32"])
    runtime = setup_integration.runtime_data
    result = await choose(hass, await start(hass, setup_integration), "edit_package")
    assert result["step_id"] == "edit_package"
    options = result["data_schema"].schema["file_id"].config["options"]
    assert options == [
        {"value": "aaaa0001", "label": "1.0 (aaaa0001)"},
        {"value": "aaaa0002", "label": "2.0 (aaaa0002)"},
    ]

    result = await submit(hass, result, {"file_id": "aaaa0001"})
    assert result["step_id"] == "package_details"
    assert result["description_placeholders"] == {"package": "1.0 (aaaa0001)", "count": "2"}
    suggested = {
        str(key): (key.description or {}).get("suggested_value")
        for key in result["data_schema"].schema
    }
    assert suggested == {
        "version": "1.0",
        "release_notes": "Old",
        "hardware": [],
        "sw_commit": "abc1234",
        "position": 1,
    }

    # Emptied optional fields are left out by the frontend: they clear.
    result = await submit(
        hass, result, {"version": " 1.0.1 ", "hardware": ["esp8266"], "position": 2.0}
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    catalogue = catalogue_of(setup_integration)
    assert [p.version for p in catalogue.packages] == ["2.0", "1.0.1"]
    edited = catalogue.packages[1]
    assert (edited.release_notes, edited.hardware, edited.sw_commit) == (None, ("esp8266",), None)
    assert setup_integration.options == {}
    assert setup_integration.runtime_data is runtime


async def test_edit_package_errors_in_the_form(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A taken or empty label is shown in the form, which keeps what was typed."""
    await register(hass, "aaaa0001", "1.0")
    await register(hass, "aaaa0002", "2.0")
    result = await choose(hass, await start(hass, setup_integration), "edit_package")
    result = await submit(hass, result, {"file_id": "aaaa0001"})

    result = await submit(hass, result, {"version": "2.0", "position": 1})
    assert result["errors"] == {"version": "version_taken"}
    assert result["description_placeholders"] == {
        "package": "1.0 (aaaa0001)",
        "count": "2",
        "version": "2.0",
        "file_id": "aaaa0002",
    }

    result = await submit(hass, result, {"version": "", "sw_commit": "x" * 65, "position": 1})
    assert result["errors"] == {"version": "invalid_version", "sw_commit": "invalid_sw_commit"}
    suggested = {
        str(key): (key.description or {}).get("suggested_value")
        for key in result["data_schema"].schema
    }
    assert suggested["sw_commit"] == "x" * 65
    assert [p.version for p in catalogue_of(setup_integration).packages] == ["1.0", "2.0"]


async def test_remove_package(hass: HomeAssistant, setup_integration: MockConfigEntry) -> None:
    """Choose a package and it is forgotten; the entity's latest version follows."""
    await register(hass, "aaaa0001", "1.0")
    await register(hass, "aaaa0002", "2.0")
    assert hass.states.get(ENTITY_ID).attributes["latest_version"] == "2.0"
    result = await choose(hass, await start(hass, setup_integration), "remove_package")

    result = await submit(hass, result, {"file_id": "aaaa0002"})

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert [p.file_id for p in catalogue_of(setup_integration).packages] == ["aaaa0001"]
    assert hass.states.get(ENTITY_ID).attributes["latest_version"] == "1.0"
    assert setup_integration.options == {}


async def test_remove_package_removed_meanwhile(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A package removed (by an action) while the form was open is reported in the form."""
    await register(hass, "aaaa0001", "1.0")
    await register(hass, "aaaa0002", "2.0")
    result = await choose(hass, await start(hass, setup_integration), "remove_package")
    await catalogue_of(setup_integration).async_remove("aaaa0002")

    result = await submit(hass, result, {"file_id": "aaaa0002"})

    assert result["errors"] == {"base": "unknown_package"}
    assert result["description_placeholders"] == {"file_id": "aaaa0002"}


async def test_package_details_removed_meanwhile(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Editing a package that was removed meanwhile ends the flow, saying so."""
    await register(hass, "aaaa0001", "1.0")
    result = await choose(hass, await start(hass, setup_integration), "edit_package")
    result = await submit(hass, result, {"file_id": "aaaa0001"})
    await catalogue_of(setup_integration).async_remove("aaaa0001")

    result = await submit(hass, result, {"version": "1.1", "position": 1})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unknown_package"


@pytest.mark.parametrize("step", ["edit_package", "remove_package"])
async def test_no_packages_left(
    hass: HomeAssistant, setup_integration: MockConfigEntry, step: str
) -> None:
    """When the last package went while the menu was open, the step says there is none."""
    await register(hass, "aaaa0001", "1.0")
    menu = await start(hass, setup_integration)
    await catalogue_of(setup_integration).async_remove("aaaa0001")

    result = await choose(hass, menu, step)

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_packages"


@pytest.mark.parametrize("step", ["add_package", "edit_package", "remove_package"])
async def test_entry_unloaded_while_menu_open(
    hass: HomeAssistant, setup_integration: MockConfigEntry, step: str
) -> None:
    """Package steps end, saying why, when the entry was unloaded while the menu was open."""
    await register(hass, "aaaa0001", "1.0")
    menu = await start(hass, setup_integration)
    await hass.config_entries.async_unload(setup_integration.entry_id)
    await hass.async_block_till_done()

    result = await choose(hass, menu, step)

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"


async def test_entry_unloaded_while_editing(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Submitting a package's details after the entry was unloaded ends the flow."""
    await register(hass, "aaaa0001", "1.0")
    result = await choose(hass, await start(hass, setup_integration), "edit_package")
    result = await submit(hass, result, {"file_id": "aaaa0001"})
    await hass.config_entries.async_unload(setup_integration.entry_id)
    await hass.async_block_till_done()

    result = await submit(hass, result, {"version": "1.1", "position": 1})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"
