"""The reconfigure flow: move an account to another console address, with a new API key there."""

from collections.abc import Generator
from unittest.mock import AsyncMock, patch

from homeassistant.config_entries import ConfigEntryState
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

from .conftest import API_KEY, CONSOLE_URL

NEW_URL = "https://iot.example.test"
NEW_API = f"{NEW_URL}/mf-rproxy"
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def mqtt_entry(hass: HomeAssistant) -> None:
    """Make HA's MQTT integration look configured."""
    MockConfigEntry(
        domain="mqtt", data={"broker": "localhost"}, state=ConfigEntryState.LOADED
    ).add_to_hass(hass)


@pytest.fixture(autouse=True)
def mock_setup_entry() -> Generator[AsyncMock]:
    """Keep the entry from loading: these tests are about the flow only."""
    with patch(
        "custom_components.insighio_ota.async_setup_entry", return_value=True
    ) as setup_entry:
        yield setup_entry


@pytest.fixture
def entry(hass: HomeAssistant, config_entry: MockConfigEntry) -> MockConfigEntry:
    """Return the account's entry, added to HA."""
    config_entry.add_to_hass(hass)
    return config_entry


def answer_new_console(aioclient_mock: AiohttpClientMocker, token_status: int = 201) -> None:
    """Make the console at the new address sign the account in and make a key."""
    aioclient_mock.post(f"{NEW_API}/tokens", status=token_status, json={"token": "login-token"})
    aioclient_mock.post(
        f"{NEW_API}/keys",
        status=201,
        json={
            "id": "key-id-new",
            "name": "Home Assistant insighio_ota",
            "value": "new-api-key",
            "issued_at": "2026-12-03T10:00:00Z",
            "expires_at": "2036-12-01T10:00:00Z",
        },
    )


async def test_reconfigure_moves_the_account(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    aioclient_mock: AiohttpClientMocker,
    mock_setup_entry: AsyncMock,
) -> None:
    """A new address gets a new key there; the unique id follows; the entry reloads."""
    answer_new_console(aioclient_mock)
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert result["description_placeholders"] == {"email": "user@example.test"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONSOLE_URL: f"{NEW_URL}/", CONF_PASSWORD: PASSWORD}
    )
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == {
        CONF_CONSOLE_URL: NEW_URL,
        CONF_EMAIL: "user@example.test",
        CONF_API_KEY: "new-api-key",
        CONF_API_KEY_ID: "key-id-new",
    }
    assert entry.unique_id == f"{NEW_URL}|user@example.test"
    assert len(mock_setup_entry.mock_calls) == 1
    assert CONF_PASSWORD not in entry.data


async def test_reconfigure_same_address_renews_the_key(
    hass: HomeAssistant, entry: MockConfigEntry, mock_console: AiohttpClientMocker
) -> None:
    """Keeping the address is allowed: it makes a new key on the same console."""
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONSOLE_URL: CONSOLE_URL, CONF_PASSWORD: PASSWORD}
    )
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_API_KEY] == API_KEY
    assert entry.unique_id == f"{CONSOLE_URL}|user@example.test"


async def test_reconfigure_invalid_url_then_wrong_password(
    hass: HomeAssistant, entry: MockConfigEntry, aioclient_mock: AiohttpClientMocker
) -> None:
    """Errors keep the old data and show the form again with what was typed."""
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONSOLE_URL: "ftp://nope", CONF_PASSWORD: PASSWORD}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_CONSOLE_URL: "invalid_url"}

    answer_new_console(aioclient_mock, token_status=401)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONSOLE_URL: NEW_URL, CONF_PASSWORD: "wrong"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    schema_defaults = {
        str(key): key.default() for key in result["data_schema"].schema if str(key) != "password"
    }
    assert schema_defaults == {CONF_CONSOLE_URL: NEW_URL}
    assert entry.data[CONF_CONSOLE_URL] == CONSOLE_URL
    assert entry.data[CONF_API_KEY] == API_KEY


async def test_reconfigure_to_an_account_already_set_up(
    hass: HomeAssistant, entry: MockConfigEntry, aioclient_mock: AiohttpClientMocker
) -> None:
    """Moving onto the address of another entry of the same account aborts, asking nothing."""
    MockConfigEntry(
        domain=DOMAIN,
        unique_id=f"{NEW_URL}|user@example.test",
        data={CONF_CONSOLE_URL: NEW_URL, CONF_EMAIL: "user@example.test"},
    ).add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONSOLE_URL: NEW_URL, CONF_PASSWORD: PASSWORD}
    )

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert aioclient_mock.call_count == 0
    assert entry.data[CONF_CONSOLE_URL] == CONSOLE_URL
