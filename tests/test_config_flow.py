"""The config flow: sign in to a console account, store an API key and never the password."""

from collections.abc import Generator
from typing import Any
from unittest.mock import AsyncMock, patch

import aiohttp
from homeassistant.config_entries import SOURCE_USER, ConfigEntryDisabler, ConfigEntryState
from homeassistant.const import CONF_EMAIL, CONF_PASSWORD
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.const import (
    CONF_API_KEY,
    CONF_API_KEY_ID,
    CONF_CONSOLE_URL,
    DOMAIN,
)

from .conftest import API, API_KEY, CONSOLE_URL

PASSWORD = "correct horse battery staple"
USER_INPUT = {
    CONF_CONSOLE_URL: CONSOLE_URL,
    CONF_EMAIL: "user@example.test",
    CONF_PASSWORD: PASSWORD,
}


@pytest.fixture
def mqtt_entry_kwargs() -> dict[str, Any] | None:
    """Describe HA's MQTT entry; tests override this with None for "not configured"."""
    # Marked loaded so that HA, setting up MQTT as our dependency, does not try to connect.
    return {"state": ConfigEntryState.LOADED}


@pytest.fixture(autouse=True)
def mqtt_entry(hass: HomeAssistant, mqtt_entry_kwargs: dict[str, Any] | None) -> None:
    """Make HA's MQTT integration look configured (the flow only checks that it exists)."""
    if mqtt_entry_kwargs is not None:
        MockConfigEntry(
            domain="mqtt", data={"broker": "localhost"}, **mqtt_entry_kwargs
        ).add_to_hass(hass)


@pytest.fixture(autouse=True)
def mock_setup_entry() -> Generator[AsyncMock]:
    """Keep the created entry from loading: these tests are about the flow only."""
    with patch(
        "custom_components.insighio_ota.async_setup_entry", return_value=True
    ) as setup_entry:
        yield setup_entry


def mock_api_key(aioclient_mock: AiohttpClientMocker) -> None:
    """Answer the API key creation as the console does."""
    aioclient_mock.post(
        f"{API}/keys",
        status=201,
        json={
            "id": "key-id-1",
            "name": "Home Assistant insighio_ota",
            "value": API_KEY,
            "issued_at": "2026-12-03T10:00:00Z",
            "expires_at": "2036-12-01T10:00:00Z",
        },
    )


async def start_flow(hass: HomeAssistant) -> str:
    """Open the user step, choose a console account and return the flow id."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["console", "mqtt_only"]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "console"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "console"
    assert result["errors"] == {}
    return result["flow_id"]


async def test_success_stores_api_key_not_password(
    hass: HomeAssistant, mock_console: AiohttpClientMocker, mock_setup_entry: AsyncMock
) -> None:
    """The password is exchanged for an API key; the entry holds the key, not the password."""
    flow_id = await start_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {
            CONF_CONSOLE_URL: " https://Console.Example.test/mf-rproxy/ ",
            CONF_EMAIL: " User@Example.test ",
            CONF_PASSWORD: PASSWORD,
        },
    )
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "User@Example.test"
    entry = result["result"]
    assert entry.unique_id == f"{CONSOLE_URL}|user@example.test"
    assert entry.data == {
        CONF_CONSOLE_URL: CONSOLE_URL,
        CONF_EMAIL: "User@Example.test",
        CONF_API_KEY: API_KEY,
        CONF_API_KEY_ID: "key-id-1",
    }
    assert CONF_PASSWORD not in entry.data
    assert PASSWORD not in repr(dict(entry.data))
    assert PASSWORD not in repr(dict(entry.options))
    # The login token, not the password, authorised the key creation.
    key_call = next(call for call in mock_console.mock_calls if str(call[1]).endswith("/keys"))
    assert key_call[3]["Authorization"] == "login-token"
    assert len(mock_setup_entry.mock_calls) == 1


async def test_same_account_twice_aborts(
    hass: HomeAssistant, mock_console: AiohttpClientMocker
) -> None:
    """The same console and email (any case, any URL spelling) cannot be added twice."""
    MockConfigEntry(
        domain=DOMAIN,
        unique_id=f"{CONSOLE_URL}|user@example.test",
        data={CONF_CONSOLE_URL: CONSOLE_URL, CONF_EMAIL: "user@example.test"},
    ).add_to_hass(hass)

    flow_id = await start_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {**USER_INPUT, CONF_EMAIL: "USER@example.test", CONF_CONSOLE_URL: CONSOLE_URL + "/"},
    )

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    # Aborted before anything was sent to the console.
    assert mock_console.call_count == 0


async def test_other_email_on_same_console_is_another_entry(
    hass: HomeAssistant, mock_console: AiohttpClientMocker
) -> None:
    """The unique id is per console and email: another account of the console is welcome."""
    MockConfigEntry(
        domain=DOMAIN,
        unique_id=f"{CONSOLE_URL}|user@example.test",
        data={CONF_CONSOLE_URL: CONSOLE_URL, CONF_EMAIL: "user@example.test"},
    ).add_to_hass(hass)

    flow_id = await start_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {**USER_INPUT, CONF_EMAIL: "other@example.test"}
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == f"{CONSOLE_URL}|other@example.test"


@pytest.mark.parametrize(
    ("tokens_mock", "error"),
    [
        ({"status": 401, "json": {"error": "bad credentials"}}, "invalid_auth"),
        ({"status": 403}, "invalid_auth"),
        ({"status": 500}, "cannot_connect"),
        ({"exc": aiohttp.ClientConnectionError()}, "cannot_connect"),
        ({"exc": TimeoutError()}, "cannot_connect"),
        ({"status": 201, "json": {"no": "token"}}, "cannot_connect"),
    ],
)
async def test_console_errors_then_recovery(
    hass: HomeAssistant,
    aioclient_mock: AiohttpClientMocker,
    mock_setup_entry: AsyncMock,
    tokens_mock: dict,
    error: str,
) -> None:
    """A refused or unreachable console shows the form again, keeping the input; then it works."""
    aioclient_mock.post(f"{API}/tokens", **tokens_mock)
    mock_api_key(aioclient_mock)

    flow_id = await start_flow(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, USER_INPUT)

    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "console"
    assert result["errors"] == {"base": error}
    # The form keeps what the user typed, except the password.
    defaults = {
        str(key): key.default() for key in result["data_schema"].schema if callable(key.default)
    }
    assert defaults[CONF_CONSOLE_URL] == CONSOLE_URL
    assert defaults[CONF_EMAIL] == "user@example.test"
    assert CONF_PASSWORD not in defaults
    assert not hass.config_entries.async_entries(DOMAIN)

    aioclient_mock.clear_requests()
    aioclient_mock.post(f"{API}/tokens", status=201, json={"token": "login-token"})
    mock_api_key(aioclient_mock)
    result = await hass.config_entries.flow.async_configure(flow_id, USER_INPUT)
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_API_KEY] == API_KEY
    assert len(mock_setup_entry.mock_calls) == 1


async def test_api_key_refused_is_invalid_auth(
    hass: HomeAssistant, aioclient_mock: AiohttpClientMocker
) -> None:
    """A login that works but may not create a key is an authentication problem too."""
    aioclient_mock.post(f"{API}/tokens", status=201, json={"token": "login-token"})
    aioclient_mock.post(f"{API}/keys", status=401)

    flow_id = await start_flow(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, USER_INPUT)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    assert not hass.config_entries.async_entries(DOMAIN)


async def test_unexpected_error_is_unknown(
    hass: HomeAssistant, mock_console: AiohttpClientMocker, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the client shows `unknown` and is logged, instead of crashing the flow."""
    flow_id = await start_flow(hass)
    with patch(
        "custom_components.insighio_ota.config_flow.ConsoleClient.login",
        side_effect=RuntimeError("boom"),
    ):
        result = await hass.config_entries.flow.async_configure(flow_id, USER_INPUT)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "unknown"}
    assert "Unexpected error while signing in to the console" in caplog.text
    assert PASSWORD not in caplog.text

    result = await hass.config_entries.flow.async_configure(flow_id, USER_INPUT)
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize(
    "url",
    [
        "console.insigh.io",
        "ftp://console.example.test",
        "https://",
        "https://user:pw@console.example.test",
        "https://console.example.test/?x=1",
    ],
)
async def test_invalid_url(
    hass: HomeAssistant, mock_console: AiohttpClientMocker, url: str
) -> None:
    """A URL that is not a plain http(s) console address is refused on its field."""
    flow_id = await start_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {**USER_INPUT, CONF_CONSOLE_URL: url}
    )

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_CONSOLE_URL: "invalid_url"}
    assert mock_console.call_count == 0

    result = await hass.config_entries.flow.async_configure(flow_id, USER_INPUT)
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize("mqtt_entry_kwargs", [None])
async def test_abort_without_mqtt(hass: HomeAssistant) -> None:
    """Without HA's MQTT integration the flow explains what to set up first."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "mqtt_not_configured"


@pytest.mark.parametrize("mqtt_entry_kwargs", [{"disabled_by": ConfigEntryDisabler.USER}])
async def test_abort_with_disabled_mqtt(hass: HomeAssistant) -> None:
    """A disabled MQTT entry does not count as configured."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "mqtt_not_configured"


@pytest.fixture
def revoked_entry(hass: HomeAssistant) -> MockConfigEntry:
    """Return an entry whose stored API key the console no longer accepts."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="user@example.test",
        unique_id=f"{CONSOLE_URL}|user@example.test",
        data={
            CONF_CONSOLE_URL: CONSOLE_URL,
            CONF_EMAIL: "user@example.test",
            CONF_API_KEY: "revoked-key",
            CONF_API_KEY_ID: "key-id-0",
        },
    )
    entry.add_to_hass(hass)
    return entry


async def test_reauth_replaces_api_key(
    hass: HomeAssistant,
    revoked_entry: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    mock_setup_entry: AsyncMock,
) -> None:
    """Signing in again stores a new API key, still no password, and reloads the entry."""
    result = await revoked_entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"]["email"] == "user@example.test"

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_PASSWORD: PASSWORD}
    )
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert revoked_entry.data == {
        CONF_CONSOLE_URL: CONSOLE_URL,
        CONF_EMAIL: "user@example.test",
        CONF_API_KEY: API_KEY,
        CONF_API_KEY_ID: "key-id-1",
    }
    login = next(call for call in mock_console.mock_calls if str(call[1]).endswith("/tokens"))
    assert login[2] == {"email": "user@example.test", "password": PASSWORD}
    assert len(mock_setup_entry.mock_calls) == 1
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


async def test_reauth_wrong_password_then_right(
    hass: HomeAssistant, revoked_entry: MockConfigEntry, aioclient_mock: AiohttpClientMocker
) -> None:
    """A wrong password keeps the old data and asks again."""
    aioclient_mock.post(f"{API}/tokens", status=401)
    result = await revoked_entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_PASSWORD: "wrong"}
    )

    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["errors"] == {"base": "invalid_auth"}
    assert revoked_entry.data[CONF_API_KEY] == "revoked-key"

    aioclient_mock.clear_requests()
    aioclient_mock.post(f"{API}/tokens", status=201, json={"token": "login-token"})
    mock_api_key(aioclient_mock)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_PASSWORD: PASSWORD}
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert revoked_entry.data[CONF_API_KEY] == API_KEY
