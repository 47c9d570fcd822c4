"""Add a console account: the password is exchanged for a revocable API key, which is stored."""

from collections.abc import Mapping
from typing import Any

from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
from homeassistant.const import CONF_EMAIL, CONF_PASSWORD
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
import probatio

from .console import (
    DEFAULT_CONSOLE_URL,
    ApiKey,
    ConsoleAuthenticationError,
    ConsoleClient,
    ConsoleError,
    normalize_console_url,
)
from .const import (
    API_KEY_DURATION,
    API_KEY_NAME,
    CONF_API_KEY,
    CONF_API_KEY_ID,
    CONF_CONSOLE_URL,
    DOMAIN,
    LOGGER,
)

MQTT_DOMAIN = "mqtt"


def _user_schema(defaults: dict[str, Any]) -> probatio.Schema:
    return probatio.Schema(
        {
            probatio.Required(
                CONF_CONSOLE_URL, default=defaults.get(CONF_CONSOLE_URL, DEFAULT_CONSOLE_URL)
            ): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
            probatio.Required(CONF_EMAIL, default=defaults.get(CONF_EMAIL, "")): TextSelector(
                TextSelectorConfig(type=TextSelectorType.EMAIL, autocomplete="username")
            ),
            probatio.Required(CONF_PASSWORD): TextSelector(
                TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="current-password")
            ),
        }
    )


class InsighioOtaConfigFlow(ConfigFlow, domain=DOMAIN):
    """Sign in to an insigh.io console account."""

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the console and the account, and check them."""
        # Requests and reports travel through HA's MQTT integration; without it nothing works.
        if not self.hass.config_entries.async_entries(MQTT_DOMAIN, include_disabled=False):
            return self.async_abort(reason="mqtt_not_configured")
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                console_url = normalize_console_url(user_input[CONF_CONSOLE_URL])
            except ValueError:
                errors[CONF_CONSOLE_URL] = "invalid_url"
            else:
                email = user_input[CONF_EMAIL].strip()
                await self.async_set_unique_id(f"{console_url}|{email.lower()}")
                self._abort_if_unique_id_configured()
                api_key = await self._async_create_api_key(
                    console_url, email, user_input[CONF_PASSWORD], errors
                )
                if api_key is not None:
                    return self.async_create_entry(
                        title=email,
                        data={
                            CONF_CONSOLE_URL: console_url,
                            CONF_EMAIL: email,
                            CONF_API_KEY: api_key.value,
                            CONF_API_KEY_ID: api_key.key_id,
                        },
                    )
        return self.async_show_form(
            step_id="user",
            data_schema=_user_schema({**(user_input or {})}),
            errors=errors,
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """Sign in again when the console refuses the stored API key (revoked or expired)."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the password of the account and replace the stored API key."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            api_key = await self._async_create_api_key(
                entry.data[CONF_CONSOLE_URL],
                entry.data[CONF_EMAIL],
                user_input[CONF_PASSWORD],
                errors,
            )
            if api_key is not None:
                return self.async_update_reload_and_abort(
                    entry,
                    data_updates={CONF_API_KEY: api_key.value, CONF_API_KEY_ID: api_key.key_id},
                )
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=probatio.Schema(
                {
                    probatio.Required(CONF_PASSWORD): TextSelector(
                        TextSelectorConfig(
                            type=TextSelectorType.PASSWORD, autocomplete="current-password"
                        )
                    )
                }
            ),
            description_placeholders={"email": entry.data[CONF_EMAIL]},
            errors=errors,
        )

    async def _async_create_api_key(
        self, console_url: str, email: str, password: str, errors: dict[str, str]
    ) -> ApiKey | None:
        """Exchange the password for a new API key; on failure fill `errors`, return None."""
        client = ConsoleClient(async_get_clientsession(self.hass), console_url)
        try:
            token = await client.login(email, password)
            return await client.create_api_key(token, API_KEY_NAME, API_KEY_DURATION)
        except ConsoleAuthenticationError:
            errors["base"] = "invalid_auth"
        except ConsoleError as err:
            LOGGER.debug("Cannot reach the console: %s", err)
            errors["base"] = "cannot_connect"
        except Exception:
            LOGGER.exception("Unexpected error while signing in to the console")
            errors["base"] = "unknown"
        return None
