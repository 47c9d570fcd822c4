"""Actions of the integration: the package catalogue (register, update, remove, list).

`async_register_package`, `async_update_package` and `async_remove_package` are shared with the
options flow, which shows the same translated errors in its forms.
"""

from collections.abc import Iterable
from typing import Any, Final

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import (
    config_validation as cv,
    device_registry as dr,
    entity_registry as er,
)
from homeassistant.helpers.target import TargetSelection, async_extract_referenced_entity_ids
import probatio

from .catalogue import (
    HARDWARE_FAMILIES,
    Package,
    PackageCatalogue,
    UnknownPackageError,
    VersionTakenError,
)
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
    SERVICE_CANCEL,
    SERVICE_REGISTER_PACKAGE,
)
from .coordinator import InsighioOtaConfigEntry, InsighioOtaRuntimeData
from .package import PackageFormatError, check_package
from .protocol import OtaRequest, ProtocolError

ATTR_HARDWARE: Final = "hardware"
ATTR_SW_COMMIT: Final = "sw_commit"
ATTR_POSITION: Final = "position"
ATTR_PACKAGES: Final = "packages"
SERVICE_UPDATE_PACKAGE: Final = "update_package"
SERVICE_REMOVE_PACKAGE: Final = "remove_package"
SERVICE_LIST_PACKAGES: Final = "list_packages"
VERSION_MAX_LENGTH: Final = 64
SW_COMMIT_MAX_LENGTH: Final = 64

_FILE_ID = probatio.All(cv.string, probatio.Strip, probatio.Length(min=1))
VERSION_VALIDATOR = probatio.All(
    cv.string, probatio.Strip, probatio.Length(min=1, max=VERSION_MAX_LENGTH)
)
_HARDWARE = probatio.All(
    cv.ensure_list, [probatio.All(cv.string, probatio.Strip, probatio.In(HARDWARE_FAMILIES))]
)
# Empty clears the commit of a package (update_package) or lets version.py give it (register).
SW_COMMIT_VALIDATOR = probatio.All(
    cv.string, probatio.Strip, probatio.Length(max=SW_COMMIT_MAX_LENGTH)
)

REGISTER_PACKAGE_SCHEMA = probatio.Schema(
    {
        probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        probatio.Required(ATTR_FILE_ID): _FILE_ID,
        probatio.Optional(ATTR_FILE_TYPE, default=".tar"): probatio.All(cv.string, probatio.Strip),
        probatio.Required(ATTR_VERSION): VERSION_VALIDATOR,
        probatio.Optional(ATTR_RELEASE_NOTES): cv.string,
        probatio.Optional(ATTR_HARDWARE, default=list): _HARDWARE,
        probatio.Optional(ATTR_SW_COMMIT): SW_COMMIT_VALIDATOR,
    }
)
UPDATE_PACKAGE_SCHEMA = probatio.Schema(
    {
        probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        probatio.Required(ATTR_FILE_ID): _FILE_ID,
        probatio.Optional(ATTR_VERSION): VERSION_VALIDATOR,
        probatio.Optional(ATTR_RELEASE_NOTES): cv.string,
        probatio.Optional(ATTR_HARDWARE): _HARDWARE,
        probatio.Optional(ATTR_SW_COMMIT): SW_COMMIT_VALIDATOR,
        # 1 = the oldest package; a number past the end makes it the newest.
        probatio.Optional(ATTR_POSITION): probatio.All(probatio.Coerce(int), probatio.Range(min=1)),
    }
)
REMOVE_PACKAGE_SCHEMA = probatio.Schema(
    {probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string, probatio.Required(ATTR_FILE_ID): _FILE_ID}
)
LIST_PACKAGES_SCHEMA = probatio.Schema({probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string})


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


def package_data(catalogue: PackageCatalogue, package: Package) -> dict[str, Any]:
    """Return a package as an action responds with it; `position` 1 is the oldest."""
    return {**package.as_dict(), ATTR_POSITION: catalogue.position_of(package.file_id) + 1}


async def async_register_package(
    runtime: InsighioOtaRuntimeData,
    *,
    file_id: str,
    file_type: str,
    version: str,
    release_notes: str | None = None,
    hardware: Iterable[str] = (),
    sw_commit: str | None = None,
) -> Package:
    """Download a console package, check the firmware can apply it, then store it.

    Nothing is stored unless every check passes. `sw_commit` defaults to the one the package's
    `version.py` names. Raises translated `ServiceValidationError`/`HomeAssistantError`.
    """
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
        try:
            report = check_package(download.content, file_type)
        except PackageFormatError as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="package_format",
                translation_placeholders={"file_id": file_id, "error": str(err)},
            ) from err
        return await runtime.catalogue.async_add(
            file_id=file_id,
            file_type=file_type,
            size=download.size,
            sha256=download.sha256,
            version=version,
            release_notes=release_notes,
            hardware=hardware,
            sw_commit=(sw_commit or "").strip() or report.sw_commit,
        )
    except VersionTakenError as err:
        raise _version_taken(err) from err


async def async_update_package(
    runtime: InsighioOtaRuntimeData, file_id: str, **changes: Any
) -> Package:
    """Change a registered package (see `PackageCatalogue.async_update`), with translated errors.

    `position` here is 1-based, as users count.
    """
    if ATTR_POSITION in changes:
        changes[ATTR_POSITION] -= 1
    try:
        return await runtime.catalogue.async_update(file_id, **changes)
    except UnknownPackageError as err:
        raise _unknown_package(file_id) from err
    except VersionTakenError as err:
        raise _version_taken(err) from err


async def async_remove_package(runtime: InsighioOtaRuntimeData, file_id: str) -> Package:
    """Forget a registered package, with a translated error when there is none."""
    try:
        return await runtime.catalogue.async_remove(file_id)
    except UnknownPackageError as err:
        raise _unknown_package(file_id) from err


def _version_taken(err: VersionTakenError) -> ServiceValidationError:
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="version_taken",
        translation_placeholders={"version": err.version, "file_id": err.file_id},
    )


def _unknown_package(file_id: str) -> ServiceValidationError:
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="unknown_package",
        translation_placeholders={"file_id": file_id},
    )


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


async def _async_register_package_action(call: ServiceCall) -> ServiceResponse:
    """Register a package; respond with what was stored."""
    runtime = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID)).runtime_data
    package = await async_register_package(
        runtime,
        file_id=call.data[ATTR_FILE_ID],
        file_type=call.data[ATTR_FILE_TYPE],
        version=call.data[ATTR_VERSION],
        release_notes=call.data.get(ATTR_RELEASE_NOTES),
        hardware=call.data[ATTR_HARDWARE],
        sw_commit=call.data.get(ATTR_SW_COMMIT),
    )
    return package_data(runtime.catalogue, package)


async def _async_update_package_action(call: ServiceCall) -> ServiceResponse:
    """Change a package's label, notes, hardware, commit or position; respond with the result."""
    runtime = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID)).runtime_data
    changes = {
        key: call.data[key]
        for key in (ATTR_VERSION, ATTR_RELEASE_NOTES, ATTR_HARDWARE, ATTR_SW_COMMIT, ATTR_POSITION)
        if key in call.data
    }
    package = await async_update_package(runtime, call.data[ATTR_FILE_ID], **changes)
    return package_data(runtime.catalogue, package)


async def _async_remove_package_action(call: ServiceCall) -> None:
    """Forget a package; devices that installed it keep their software."""
    runtime = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID)).runtime_data
    await async_remove_package(runtime, call.data[ATTR_FILE_ID])


async def _async_list_packages_action(call: ServiceCall) -> ServiceResponse:
    """Respond with the registered packages, oldest first."""
    catalogue = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID)).runtime_data.catalogue
    return {ATTR_PACKAGES: [package_data(catalogue, p) for p in catalogue.packages]}


def _targeted_devices(call: ServiceCall) -> list[tuple[InsighioOtaConfigEntry, str]]:
    """Return the loaded entry and console device id of every device an action targets.

    The target may name devices, areas, labels or any of our entities; each resolves to the HA
    device it belongs to, whose identifier is the console's device id.
    """
    hass = call.hass
    selected = async_extract_referenced_entity_ids(hass, TargetSelection(call.data))
    entity_registry = er.async_get(hass)
    device_registry = dr.async_get(hass)
    device_ids = set(selected.referenced_devices)
    for entity_id in selected.referenced | selected.indirectly_referenced:
        entity = entity_registry.async_get(entity_id)
        if entity is not None and entity.platform == DOMAIN and entity.device_id is not None:
            device_ids.add(entity.device_id)
    loaded = {entry.entry_id: entry for entry in hass.config_entries.async_loaded_entries(DOMAIN)}
    targets: list[tuple[InsighioOtaConfigEntry, str]] = []
    for device_id in sorted(device_ids):
        device = device_registry.async_get(device_id)
        if device is None:
            continue
        entries = [loaded[entry_id] for entry_id in device.config_entries if entry_id in loaded]
        targets.extend(
            (entry, identifier)
            for domain, identifier in device.identifiers
            if domain == DOMAIN
            for entry in entries
        )
    return targets


async def _async_cancel_action(call: ServiceCall) -> None:
    """Take back the waiting OTA requests of the targeted devices."""
    open_jobs = [
        (entry, device_id)
        for entry, device_id in _targeted_devices(call)
        if entry.runtime_data.tracker.in_progress(device_id)
    ]
    if not open_jobs:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="nothing_to_cancel")
    for entry, device_id in open_jobs:
        await entry.runtime_data.tracker.async_cancel(device_id)


def async_setup_services(hass: HomeAssistant) -> None:
    """Register the integration's actions (once, for all config entries)."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_REGISTER_PACKAGE,
        _async_register_package_action,
        schema=REGISTER_PACKAGE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_UPDATE_PACKAGE,
        _async_update_package_action,
        schema=UPDATE_PACKAGE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_REMOVE_PACKAGE,
        _async_remove_package_action,
        schema=REMOVE_PACKAGE_SCHEMA,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_CANCEL,
        _async_cancel_action,
        schema=cv.make_entity_service_schema({}),
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_LIST_PACKAGES,
        _async_list_packages_action,
        schema=LIST_PACKAGES_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
