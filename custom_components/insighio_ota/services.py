"""Actions of the integration: registering a console package."""

from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv
import probatio

from .catalogue import VersionTakenError
from .console import (
    ConsoleAuthenticationError,
    ConsoleError,
    PackageDownload,
    PackageNotFoundError,
)
from .const import (
    ATTR_CONFIG_ENTRY_ID,
    ATTR_FILE_ID,
    ATTR_FILE_TYPE,
    ATTR_RELEASE_NOTES,
    ATTR_VERSION,
    DOMAIN,
    SERVICE_REGISTER_PACKAGE,
)
from .coordinator import InsighioOtaConfigEntry, InsighioOtaRuntimeData
from .protocol import OtaRequest, ProtocolError

_NON_EMPTY_TEXT = probatio.All(cv.string, probatio.Strip, probatio.Length(min=1, max=255))

REGISTER_PACKAGE_SCHEMA = probatio.Schema(
    {
        probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        probatio.Required(ATTR_FILE_ID): probatio.All(
            cv.string, probatio.Strip, probatio.Length(min=1)
        ),
        probatio.Optional(ATTR_FILE_TYPE, default=".tar"): probatio.All(cv.string, probatio.Strip),
        probatio.Required(ATTR_VERSION): probatio.All(
            cv.string, probatio.Strip, probatio.Length(min=1, max=64)
        ),
        probatio.Optional(ATTR_RELEASE_NOTES): cv.string,
    }
)


def _loaded_entry(hass: HomeAssistant, entry_id: str | None) -> InsighioOtaConfigEntry:
    """Return the config entry an action is for: the one named, or the only one loaded."""
    entries: list[InsighioOtaConfigEntry] = [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.state is ConfigEntryState.LOADED
        and (entry_id is None or entry.entry_id == entry_id)
    ]
    if len(entries) == 1:
        return entries[0]
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="entry_not_loaded" if not entries else "entry_ambiguous",
    )


async def _async_register_package(call: ServiceCall) -> ServiceResponse:
    """Download a console package once to learn its size and sha256, then store it."""
    entry = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
    runtime = entry.runtime_data
    file_id: str = call.data[ATTR_FILE_ID]
    file_type: str = call.data[ATTR_FILE_TYPE]
    version: str = call.data[ATTR_VERSION]
    try:
        # Checks the id and type the way the firmware will, before anything is downloaded.
        OtaRequest(file_id, file_type, 1)
    except ProtocolError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_package",
            translation_placeholders={"error": str(err)},
        ) from err
    try:
        # Checked before the download to save it, and again when the package is stored.
        runtime.catalogue.check_version_free(file_id, version)
        download = await _async_download(runtime, file_id)
        package = await runtime.catalogue.async_add(
            file_id=file_id,
            file_type=file_type,
            size=download.size,
            sha256=download.sha256,
            version=version,
            release_notes=call.data.get(ATTR_RELEASE_NOTES),
        )
    except VersionTakenError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="version_taken",
            translation_placeholders={"version": version, "file_id": err.file_id},
        ) from err
    response: dict[str, Any] = {
        ATTR_FILE_ID: package.file_id,
        ATTR_FILE_TYPE: package.file_type,
        ATTR_VERSION: package.version,
        "size": package.size,
        "sha256": package.sha256,
    }
    return response


async def _async_download(runtime: InsighioOtaRuntimeData, file_id: str) -> PackageDownload:
    """Download a package with the first device's credentials, as a device would get it."""
    devices = list(runtime.coordinator.data.values())
    if not devices:
        raise ServiceValidationError(
            translation_domain=DOMAIN, translation_key="no_device_to_verify"
        )
    try:
        return await runtime.client.download_package(file_id, devices[0])
    except PackageNotFoundError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="package_not_found",
            translation_placeholders={"file_id": file_id},
        ) from err
    except ConsoleAuthenticationError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="download_refused",
            translation_placeholders={"file_id": file_id},
        ) from err
    except ConsoleError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="console_unavailable",
            translation_placeholders={"error": str(err)},
        ) from err


def async_setup_services(hass: HomeAssistant) -> None:
    """Register the integration's actions (once, for all config entries)."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_REGISTER_PACKAGE,
        _async_register_package,
        schema=REGISTER_PACKAGE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
