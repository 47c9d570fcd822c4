"""Add a console account, or one console project followed over MQTT only.

A console account's password is exchanged for a revocable API key, which is stored. An MQTT-only
entry names one project by its data and control channel ids; its devices are found on the broker.

MQTT discovery starts a flow when insigh.io telemetry appears on HA's broker: it knows the data
channel from the topic and asks for the control channel, which telemetry does not show.

The options flow changes how updates are followed (read by the tracker at every use, so no reload
is needed) and manages the package catalogue, which lives in its own Store: package changes leave
the entry's options alone and never reload it; the entities follow the catalogue's listeners.
"""

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.const import CONF_EMAIL, CONF_PASSWORD
from homeassistant.core import callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
    TimeSelector,
)
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
import probatio

from .catalogue import HARDWARE_FAMILIES, PackageCatalogue
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
    ATTR_FILE_ID,
    ATTR_FILE_TYPE,
    ATTR_RELEASE_NOTES,
    ATTR_VERSION,
    CONF_API_KEY,
    CONF_API_KEY_ID,
    CONF_CONSOLE_URL,
    CONF_CONTROL_CHANNEL,
    CONF_DATA_CHANNEL,
    CONF_MIN_BATTERY_MV,
    CONF_MODE,
    CONF_NOTIFY_FAILURES,
    CONF_RETRY_CAP,
    CONF_SEEN_WITHIN_HOURS,
    CONF_TIMEOUT_WAKES,
    CONF_WINDOW_END,
    CONF_WINDOW_START,
    DOMAIN,
    LOGGER,
    MODE_MQTT,
)
from .coordinator import InsighioOtaRuntimeData, console_id, is_mqtt_only
from .jobs import TrackerSettings
from .package import FILE_TYPES
from .protocol import ProtocolError, parse_telemetry_serial, parse_telemetry_topic
from .services import (
    ATTR_HARDWARE,
    ATTR_POSITION,
    ATTR_SIZE,
    ATTR_SW_COMMIT,
    SW_COMMIT_VALIDATOR,
    VERSION_VALIDATOR,
    async_register_package,
    async_remove_package,
    async_update_package,
    whole_number,
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


_CHANNEL_SELECTOR = TextSelector()
_CHANNELS_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_DATA_CHANNEL): _CHANNEL_SELECTOR,
        probatio.Required(CONF_CONTROL_CHANNEL): _CHANNEL_SELECTOR,
    }
)


def _channel(value: str) -> str:
    """Return a channel id as topics carry it (lower case); raise `ValueError` if it is none."""
    return console_id(value.strip().lower())


def _channels(user_input: dict[str, Any], errors: dict[str, str]) -> tuple[str, str] | None:
    """Return the (data, control) channels of a form; on a mistake fill `errors`, return None."""
    channels: dict[str, str] = {}
    for field in (CONF_DATA_CHANNEL, CONF_CONTROL_CHANNEL):
        try:
            channels[field] = _channel(user_input[field])
        except ValueError:
            errors[field] = "invalid_channel"
    if errors:
        return None
    if channels[CONF_DATA_CHANNEL] == channels[CONF_CONTROL_CHANNEL]:
        errors[CONF_CONTROL_CHANNEL] = "same_channel"
        return None
    return channels[CONF_DATA_CHANNEL], channels[CONF_CONTROL_CHANNEL]


def _telemetry_channel(discovery_info: MqttServiceInfo) -> str | None:
    """Return the data channel of insigh.io telemetry, None for any other message."""
    try:
        device_id = parse_telemetry_topic(discovery_info.topic)
        channel = discovery_info.topic.split("/")[1]
        console_id(device_id)
        console_id(channel)
        parse_telemetry_serial(discovery_info.payload)
    except ProtocolError, ValueError:
        return None
    return channel


def _mqtt_only_title(data_channel: str) -> str:
    return f"insigh.io project {data_channel[:8]}"


class InsighioOtaConfigFlow(ConfigFlow, domain=DOMAIN):
    """Sign in to an insigh.io console account, or follow one project over MQTT only."""

    VERSION = 1

    def __init__(self) -> None:
        """Start with no discovered data channel."""
        self._data_channel: str | None = None

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> InsighioOtaOptionsFlow:
        """Return the options flow: update settings and the package catalogue."""
        return InsighioOtaOptionsFlow()

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Offer the two ways in: a console account, or one project over MQTT only."""
        # Requests and reports travel through HA's MQTT integration; without it nothing works.
        if not self.hass.config_entries.async_entries(MQTT_DOMAIN, include_disabled=False):
            return self.async_abort(reason="mqtt_not_configured")
        return self.async_show_menu(step_id="user", menu_options=["console", "mqtt_only"])

    async def async_step_console(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the console and the account, and check them."""
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
            step_id="console",
            data_schema=_user_schema({**(user_input or {})}),
            errors=errors,
        )

    async def async_step_mqtt_only(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the project's data and control channels; devices are found on the broker."""
        errors: dict[str, str] = {}
        if user_input is not None and (channels := _channels(user_input, errors)) is not None:
            data_channel, control_channel = channels
            if not self._followed_channel_errors(channels, errors):
                # The user's own flow wins over a discovery of the same project, which then
                # ends; a project the user chose to ignore is taken over.
                await self.async_set_unique_id(data_channel, raise_on_progress=False)
                self._abort_if_unique_id_configured()
                return self._async_create_mqtt_only_entry(data_channel, control_channel)
        return self.async_show_form(
            step_id="mqtt_only",
            data_schema=self.add_suggested_values_to_schema(_CHANNELS_SCHEMA, user_input),
            errors=errors,
        )

    async def async_step_mqtt(self, discovery_info: MqttServiceInfo) -> ConfigFlowResult:
        """Offer to follow the project of insigh.io telemetry seen on HA's broker.

        HA starts this for every new payload on `channels/+/messages/+`, so anything that is not
        insigh.io telemetry, or a project already followed, ends here quickly. Only a followed
        project aborts as `already_configured`.
        """
        if (data_channel := _telemetry_channel(discovery_info)) is None:
            return self.async_abort(reason="not_insighio_device")
        if self._channel_followed(data_channel):
            # Checked before the unique id: that check would record each device's topic on the
            # entry, a write for nearly every telemetry message of a project with many devices.
            # Rediscovery after the entry is deleted needs no record: telemetry keeps coming.
            return self.async_abort(reason="already_configured")
        # One flow per project, however many of its devices talk; an ignored project ends here.
        await self.async_set_unique_id(data_channel)
        self._abort_if_unique_id_configured()
        self._data_channel = data_channel
        self.context["title_placeholders"] = {"project": data_channel[:8]}
        return await self.async_step_mqtt_confirm()

    async def async_step_mqtt_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show the discovered data channel and ask for the project's control channel."""
        assert self._data_channel is not None  # noqa: S101 - set by async_step_mqtt.
        data_channel = self._data_channel
        errors: dict[str, str] = {}
        if user_input is not None and (
            channels := _channels(
                {
                    CONF_DATA_CHANNEL: data_channel,
                    CONF_CONTROL_CHANNEL: user_input[CONF_CONTROL_CHANNEL],
                },
                errors,
            )
        ):
            if self._channel_followed(data_channel):
                # Another entry took the project while this form was open.
                return self.async_abort(reason="already_configured")
            if not self._followed_channel_errors(channels, errors):
                return self._async_create_mqtt_only_entry(*channels)
        return self.async_show_form(
            step_id="mqtt_confirm",
            data_schema=self.add_suggested_values_to_schema(
                probatio.Schema({probatio.Required(CONF_CONTROL_CHANNEL): _CHANNEL_SELECTOR}),
                user_input,
            ),
            description_placeholders={"data_channel": data_channel},
            errors=errors,
        )

    def _async_create_mqtt_only_entry(
        self, data_channel: str, control_channel: str
    ) -> ConfigFlowResult:
        """Create the entry; the callers checked that no other entry follows its channels."""
        return self.async_create_entry(
            title=_mqtt_only_title(data_channel),
            data={
                CONF_MODE: MODE_MQTT,
                CONF_DATA_CHANNEL: data_channel,
                CONF_CONTROL_CHANNEL: control_channel,
            },
        )

    def _followed_channel_errors(
        self, channels: tuple[str, str], errors: dict[str, str], *, ignore: str | None = None
    ) -> bool:
        """Mark each channel another entry follows as a form error; return True if one is.

        Typing another project's channel is a mistake the user can correct in the form, so it
        is not an abort (which would throw away what was typed).
        """
        for field, channel in zip((CONF_DATA_CHANNEL, CONF_CONTROL_CHANNEL), channels, strict=True):
            if self._channel_followed(channel, ignore=ignore):
                errors[field] = "channel_followed"
        return bool(errors)

    def _channel_followed(self, channel: str, *, ignore: str | None = None) -> bool:
        """Return True when another entry follows the channel (data or control).

        A console entry follows the projects of the devices it lists (known once it is loaded);
        an MQTT-only entry the project it names. `ignore` is the entry being reconfigured.
        """
        for entry in self.hass.config_entries.async_entries(DOMAIN):
            if entry.entry_id == ignore:
                continue
            if is_mqtt_only(entry):
                followed = {entry.data[CONF_DATA_CHANNEL], entry.data[CONF_CONTROL_CHANNEL]}
            elif entry.state is ConfigEntryState.LOADED:
                runtime: InsighioOtaRuntimeData = entry.runtime_data
                followed = runtime.coordinator.data_channels | runtime.coordinator.control_channels
            else:
                continue
            if channel in followed:
                return True
        return False

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

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Move the account to another console address; a new API key is made there.

        The account (its email) stays the same: an API key belongs to one console, so the
        password is asked again, and the entry reloads with the new address and key. An
        MQTT-only entry changes its channels instead.
        """
        entry = self._get_reconfigure_entry()
        if is_mqtt_only(entry):
            return await self.async_step_reconfigure_channels()
        email: str = entry.data[CONF_EMAIL]
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                console_url = normalize_console_url(user_input[CONF_CONSOLE_URL])
            except ValueError:
                errors[CONF_CONSOLE_URL] = "invalid_url"
            else:
                unique_id = f"{console_url}|{email.lower()}"
                if unique_id != entry.unique_id:
                    await self.async_set_unique_id(unique_id)
                    self._abort_if_unique_id_configured()
                api_key = await self._async_create_api_key(
                    console_url, email, user_input[CONF_PASSWORD], errors
                )
                if api_key is not None:
                    return self.async_update_reload_and_abort(
                        entry,
                        unique_id=unique_id,
                        data_updates={
                            CONF_CONSOLE_URL: console_url,
                            CONF_API_KEY: api_key.value,
                            CONF_API_KEY_ID: api_key.key_id,
                        },
                    )
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=probatio.Schema(
                {
                    probatio.Required(
                        CONF_CONSOLE_URL,
                        default=(user_input or {}).get(
                            CONF_CONSOLE_URL, entry.data[CONF_CONSOLE_URL]
                        ),
                    ): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
                    probatio.Required(CONF_PASSWORD): TextSelector(
                        TextSelectorConfig(
                            type=TextSelectorType.PASSWORD, autocomplete="current-password"
                        )
                    ),
                }
            ),
            description_placeholders={"email": email},
            errors=errors,
        )

    async def async_step_reconfigure_channels(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the channels of an MQTT-only entry; its unique id follows the data channel."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {}
        if (
            user_input is not None
            and (channels := _channels(user_input, errors)) is not None
            and not self._followed_channel_errors(channels, errors, ignore=entry.entry_id)
            and not self._open_updates_error(entry, channels, errors, placeholders)
        ):
            data_channel, control_channel = channels
            if data_channel != entry.unique_id:
                await self.async_set_unique_id(data_channel, raise_on_progress=False)
                self._abort_if_unique_id_configured()
            return self.async_update_reload_and_abort(
                entry,
                unique_id=data_channel,
                title=_mqtt_only_title(data_channel),
                data_updates={
                    CONF_DATA_CHANNEL: data_channel,
                    CONF_CONTROL_CHANNEL: control_channel,
                },
                reason="channels_changed",
            )
        return self.async_show_form(
            step_id="reconfigure_channels",
            data_schema=self.add_suggested_values_to_schema(
                _CHANNELS_SCHEMA, user_input or dict(entry.data)
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    @staticmethod
    def _open_updates_error(
        entry: ConfigEntry,
        channels: tuple[str, str],
        errors: dict[str, str],
        placeholders: dict[str, str],
    ) -> bool:
        """Refuse new channels while updates are open; return True when refused.

        An open update's request sits on the old control channel, which the entry would stop
        following: the device could apply it unwatched, and the job would end in a false
        timeout about a device that is no longer shown.
        """
        if channels == (entry.data[CONF_DATA_CHANNEL], entry.data[CONF_CONTROL_CHANNEL]):
            return False
        if entry.state is not ConfigEntryState.LOADED:
            return False
        runtime: InsighioOtaRuntimeData = entry.runtime_data
        devices = runtime.coordinator.data
        open_updates = [
            devices[device_id].name for device_id in runtime.tracker.devices_in_progress()
        ]
        if not open_updates:
            return False
        errors["base"] = "updates_open"
        placeholders["devices"] = ", ".join(sorted(open_updates))
        return True

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


# Option and (min, max) for the counts (defaults: TrackerSettings); 0 turns the last two guards off.
_COUNTS: tuple[tuple[str, int, int], ...] = (
    (CONF_RETRY_CAP, 1, 20),
    (CONF_TIMEOUT_WAKES, 1, 100),
    (CONF_SEEN_WITHIN_HOURS, 0, 720),
    (CONF_MIN_BATTERY_MV, 0, 5000),
)
# The maintenance window: both ends or neither.
_WINDOW = (CONF_WINDOW_START, CONF_WINDOW_END)
_HARDWARE_SELECTOR = SelectSelector(
    SelectSelectorConfig(
        options=list(HARDWARE_FAMILIES),
        multiple=True,
        mode=SelectSelectorMode.LIST,
        translation_key="hardware",
    )
)
_TEXT = TextSelector()
_MULTILINE = TextSelector(TextSelectorConfig(multiline=True))
_ADD_PACKAGE_SCHEMA = probatio.Schema(
    {
        probatio.Required(ATTR_FILE_ID): _TEXT,
        probatio.Required(ATTR_FILE_TYPE, default=FILE_TYPES[0]): SelectSelector(
            SelectSelectorConfig(options=list(FILE_TYPES), mode=SelectSelectorMode.DROPDOWN)
        ),
        probatio.Required(ATTR_VERSION): _TEXT,
        probatio.Optional(ATTR_RELEASE_NOTES): _MULTILINE,
        probatio.Optional(ATTR_HARDWARE): _HARDWARE_SELECTOR,
        probatio.Optional(ATTR_SW_COMMIT): _TEXT,
    }
)
# An MQTT-only entry cannot download the package: the user gives its type and exact size.
_ADD_MQTT_PACKAGE_SCHEMA = probatio.Schema(
    {
        probatio.Required(ATTR_FILE_ID): _TEXT,
        probatio.Required(ATTR_FILE_TYPE, default=FILE_TYPES[0]): SelectSelector(
            SelectSelectorConfig(options=list(FILE_TYPES), mode=SelectSelectorMode.DROPDOWN)
        ),
        probatio.Required(ATTR_SIZE): NumberSelector(
            NumberSelectorConfig(
                min=1, step=1, mode=NumberSelectorMode.BOX, unit_of_measurement="B"
            )
        ),
        probatio.Required(ATTR_VERSION): _TEXT,
        probatio.Optional(ATTR_RELEASE_NOTES): _MULTILINE,
        probatio.Optional(ATTR_HARDWARE): _HARDWARE_SELECTOR,
        probatio.Optional(ATTR_SW_COMMIT): _TEXT,
    }
)
# Which form field an error of the shared package functions belongs to; others are "base".
_ERROR_FIELDS = {
    "invalid_package": ATTR_FILE_ID,
    "package_not_found": ATTR_FILE_ID,
    "version_taken": ATTR_VERSION,
    "invalid_file_type": ATTR_FILE_TYPE,
    "package_registered": ATTR_FILE_ID,
}


def _count_selector(minimum: int, maximum: int) -> NumberSelector:
    return NumberSelector(
        NumberSelectorConfig(min=minimum, max=maximum, step=1, mode=NumberSelectorMode.BOX)
    )


def _pick_schema(catalogue: PackageCatalogue) -> probatio.Schema:
    """Return a form choosing one registered package, listed in order."""
    options = [
        SelectOptionDict(value=p.file_id, label=f"{p.version} ({p.file_id})")
        for p in catalogue.packages
    ]
    return probatio.Schema(
        {
            probatio.Required(ATTR_FILE_ID): SelectSelector(
                SelectSelectorConfig(options=options, mode=SelectSelectorMode.DROPDOWN)
            )
        }
    )


def _field_errors(user_input: dict[str, Any]) -> dict[str, str]:
    """Check the label, commit and size as the actions' schemas do; return form errors."""
    errors: dict[str, str] = {}
    for field, validator, error in (
        (ATTR_VERSION, VERSION_VALIDATOR, "invalid_version"),
        (ATTR_SW_COMMIT, SW_COMMIT_VALIDATOR, "invalid_sw_commit"),
        (ATTR_SIZE, whole_number, "size_not_whole"),
    ):
        if field in user_input:
            try:
                user_input[field] = validator(user_input[field])
            except probatio.Invalid:
                errors[field] = error
    return errors


def _form_error(err: HomeAssistantError) -> tuple[dict[str, str], dict[str, str]]:
    """Turn a translated error of the shared package functions into form errors."""
    key = err.translation_key or "unknown"
    placeholders = {
        name: str(value) for name, value in (err.translation_placeholders or {}).items()
    }
    return {_ERROR_FIELDS.get(key, "base"): key}, placeholders


class InsighioOtaOptionsFlow(OptionsFlow):
    """Update settings, and register, edit or remove packages."""

    def __init__(self) -> None:
        """Start with no package chosen."""
        self._file_id: str | None = None

    def _runtime(self) -> InsighioOtaRuntimeData | None:
        """Return the loaded entry's catalogue and console client, None while not loaded."""
        entry = self.config_entry
        runtime: InsighioOtaRuntimeData | None = (
            entry.runtime_data if entry.state is ConfigEntryState.LOADED else None
        )
        return runtime

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Offer the settings, and the package steps that apply now."""
        menu = ["settings"]
        if (runtime := self._runtime()) is not None:
            menu.append("add_package_mqtt" if runtime.client is None else "add_package")
            if runtime.catalogue.packages:
                menu.extend(("edit_package", "remove_package"))
        return self.async_show_menu(step_id="init", menu_options=menu)

    async def async_step_settings(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change notifications, the download retry cap, the timeout and the install guards."""
        errors: dict[str, str] = {}
        if user_input is not None:
            window = {key: user_input.get(key) or None for key in _WINDOW}
            for key, *_ in _COUNTS:
                try:
                    user_input[key] = whole_number(user_input[key])
                except probatio.Invalid:
                    # 0.5 hours must not quietly become 0, which turns the guard off.
                    errors[key] = "not_whole"
            if (window[CONF_WINDOW_START] is None) != (window[CONF_WINDOW_END] is None):
                errors["base"] = "window_incomplete"
            if not errors:
                settings: dict[str, Any] = {
                    CONF_NOTIFY_FAILURES: bool(user_input[CONF_NOTIFY_FAILURES]),
                    **{key: user_input[key] for key, *_ in _COUNTS},
                    **window,
                }
                return self.async_create_entry(data={**self.config_entry.options, **settings})
        # A refused count is shown as stored: it may not even be a number (NaN, from the API).
        typed = {key: value for key, value in (user_input or {}).items() if key not in errors}
        options = {**self.config_entry.options, **typed}
        # The tracker's settings hold the defaults; their field names are the option keys.
        current = asdict(TrackerSettings.from_options(options))
        schema: dict[Any, Any] = {
            probatio.Required(
                CONF_NOTIFY_FAILURES, default=current[CONF_NOTIFY_FAILURES]
            ): BooleanSelector()
        }
        for key, minimum, maximum in _COUNTS:
            schema[probatio.Required(key, default=current[key])] = _count_selector(minimum, maximum)
        for key in _WINDOW:
            schema[probatio.Optional(key, description={"suggested_value": options.get(key)})] = (
                TimeSelector()
            )
        return self.async_show_form(
            step_id="settings", data_schema=probatio.Schema(schema), errors=errors
        )

    async def async_step_add_package(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Download and check a console package exactly as the register action does."""
        return await self._async_add_package("add_package", _ADD_PACKAGE_SCHEMA, user_input)

    async def async_step_add_package_mqtt(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Register a package of an MQTT-only entry by its file id, type and size."""
        return await self._async_add_package(
            "add_package_mqtt", _ADD_MQTT_PACKAGE_SCHEMA, user_input
        )

    async def _async_add_package(
        self, step_id: str, schema: probatio.Schema, user_input: dict[str, Any] | None
    ) -> ConfigFlowResult:
        """Register a package as the register action does, with its errors in the form."""
        if (runtime := self._runtime()) is None:
            return self.async_abort(reason="entry_not_loaded")
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {}
        if user_input is not None and not (errors := _field_errors(user_input)):
            try:
                await async_register_package(
                    runtime,
                    file_id=user_input[ATTR_FILE_ID].strip(),
                    file_type=user_input[ATTR_FILE_TYPE],
                    version=user_input[ATTR_VERSION],
                    release_notes=user_input.get(ATTR_RELEASE_NOTES),
                    hardware=user_input.get(ATTR_HARDWARE, ()),
                    sw_commit=user_input.get(ATTR_SW_COMMIT),
                    size=user_input.get(ATTR_SIZE),
                )
            except HomeAssistantError as err:
                errors, placeholders = _form_error(err)
            else:
                return self._async_packages_done()
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(schema, user_input),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_edit_package(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose the package to edit."""
        if (runtime := self._runtime()) is None:
            return self.async_abort(reason="entry_not_loaded")
        if not runtime.catalogue.packages:
            return self.async_abort(reason="no_packages")
        if user_input is not None:
            self._file_id = user_input[ATTR_FILE_ID]
            return await self.async_step_package_details()
        return self.async_show_form(
            step_id="edit_package", data_schema=_pick_schema(runtime.catalogue)
        )

    async def async_step_package_details(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the label, notes, hardware, commit or position of the chosen package."""
        if (runtime := self._runtime()) is None:
            return self.async_abort(reason="entry_not_loaded")
        catalogue = runtime.catalogue
        package = catalogue.by_file_id(self._file_id or "")
        if package is None:
            return self.async_abort(
                reason="unknown_package", description_placeholders={"file_id": str(self._file_id)}
            )
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {}
        if user_input is not None and not (errors := _field_errors(user_input)):
            try:
                await async_update_package(
                    runtime,
                    package.file_id,
                    version=user_input[ATTR_VERSION],
                    # A field the user emptied is left out by the form: it clears.
                    release_notes=user_input.get(ATTR_RELEASE_NOTES, ""),
                    hardware=user_input.get(ATTR_HARDWARE, []),
                    sw_commit=user_input.get(ATTR_SW_COMMIT, ""),
                    position=int(user_input[ATTR_POSITION]),
                )
            except HomeAssistantError as err:
                errors, placeholders = _form_error(err)
            else:
                return self._async_packages_done()
        count = len(catalogue.packages)
        schema = probatio.Schema(
            {
                probatio.Required(ATTR_VERSION): _TEXT,
                probatio.Optional(ATTR_RELEASE_NOTES): _MULTILINE,
                probatio.Optional(ATTR_HARDWARE): _HARDWARE_SELECTOR,
                probatio.Optional(ATTR_SW_COMMIT): _TEXT,
                probatio.Required(ATTR_POSITION): _count_selector(1, count),
            }
        )
        current = {
            ATTR_VERSION: package.version,
            ATTR_RELEASE_NOTES: package.release_notes,
            ATTR_HARDWARE: list(package.hardware),
            ATTR_SW_COMMIT: package.sw_commit,
            ATTR_POSITION: catalogue.position_of(package.file_id) + 1,
        }
        return self.async_show_form(
            step_id="package_details",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or current),
            errors=errors,
            description_placeholders={
                "package": f"{package.version} ({package.file_id})",
                "count": str(count),
                **placeholders,
            },
        )

    async def async_step_remove_package(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose a package and forget it."""
        if (runtime := self._runtime()) is None:
            return self.async_abort(reason="entry_not_loaded")
        if not runtime.catalogue.packages:
            return self.async_abort(reason="no_packages")
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {}
        if user_input is not None:
            try:
                await async_remove_package(runtime, user_input[ATTR_FILE_ID])
            except HomeAssistantError as err:
                errors, placeholders = _form_error(err)
            else:
                return self._async_packages_done()
        return self.async_show_form(
            step_id="remove_package",
            data_schema=_pick_schema(runtime.catalogue),
            errors=errors,
            description_placeholders=placeholders,
        )

    def _async_packages_done(self) -> ConfigFlowResult:
        """End the flow leaving the options as they are: nothing reloads for a package."""
        return self.async_create_entry(data=dict(self.config_entry.options))
