"""Actions of the integration: the package catalogue, batch installs and staged rollouts.

`async_register_package`, `async_update_package` and `async_remove_package` are shared with the
options flow, which shows the same translated errors in its forms.
"""

from collections.abc import Iterable
from datetime import timedelta
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
    PackageRegisteredError,
    UnknownPackageError,
    VersionTakenError,
)
from .console import (
    ConsoleAuthenticationError,
    ConsoleClient,
    ConsoleError,
    PackageDownload,
    PackageNotFoundError,
)
from .const import (
    ATTR_CONFIG_ENTRY_ID,
    ATTR_FILE_ID,
    ATTR_FILE_TYPE,
    ATTR_INSIGHIO_DEVICE_ID,
    ATTR_REASON,
    ATTR_RELEASE_NOTES,
    ATTR_VERSION,
    DOMAIN,
    SERVICE_CANCEL,
    SERVICE_REGISTER_PACKAGE,
)
from .coordinator import InsighioOtaConfigEntry, InsighioOtaRuntimeData
from .package import FILE_TYPES, PackageFormatError, check_package
from .protocol import OtaRequest, ProtocolError
from .rollout import (
    DEFAULT_CANARY_COUNT,
    DEFAULT_WAVE_SIZE,
    Rollout,
    RolloutManager,
)

ATTR_HARDWARE: Final = "hardware"
ATTR_SW_COMMIT: Final = "sw_commit"
ATTR_POSITION: Final = "position"
ATTR_SIZE: Final = "size"
ATTR_PACKAGES: Final = "packages"
SERVICE_UPDATE_PACKAGE: Final = "update_package"
SERVICE_REMOVE_PACKAGE: Final = "remove_package"
SERVICE_LIST_PACKAGES: Final = "list_packages"
SERVICE_INSTALL: Final = "install"
SERVICE_START_ROLLOUT: Final = "start_rollout"
SERVICE_PAUSE_ROLLOUT: Final = "pause_rollout"
SERVICE_RESUME_ROLLOUT: Final = "resume_rollout"
SERVICE_ABORT_ROLLOUT: Final = "abort_rollout"
SERVICE_LIST_ROLLOUTS: Final = "list_rollouts"
ATTR_RESULTS: Final = "results"
ATTR_ROLLOUT: Final = "rollout"
ATTR_ROLLOUTS: Final = "rollouts"
ATTR_NAME: Final = "name"
ATTR_CANARY_COUNT: Final = "canary_count"
ATTR_WAVE_SIZE: Final = "wave_size"
ATTR_MAX_OPEN: Final = "max_open"
ATTR_FAILURE_THRESHOLD_COUNT: Final = "failure_threshold_count"
ATTR_FAILURE_THRESHOLD_PERCENT: Final = "failure_threshold_percent"
ATTR_PAUSE_BETWEEN_WAVES: Final = "pause_between_waves"
ATTR_WINDOW_START: Final = "window_start"
ATTR_WINDOW_END: Final = "window_end"
RESULT_QUEUED: Final = "queued"
RESULT_REFUSED: Final = "refused"
EVENT_INSTALL_REFUSED: Final = "insighio_ota_install_refused"
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


def whole_number(value: Any) -> int:
    """Return a whole number given as a number or text; refuse fractions.

    A package size is sent to the device as it is, and a cellular device refuses a size that is
    not its file's: 12345.5 must not quietly become 12345.
    """
    if isinstance(value, bool):
        raise probatio.Invalid("expected a whole number")
    if isinstance(value, int):
        return value
    try:
        if isinstance(value, str) and value.strip().isdecimal():
            return int(value)  # Exact, where a float would round a long number.
        number = float(value)
    except (TypeError, ValueError) as err:
        raise probatio.Invalid("expected a whole number") from err
    if not number.is_integer():
        raise probatio.Invalid("expected a whole number of bytes, not a fraction")
    return int(number)


REGISTER_PACKAGE_SCHEMA = probatio.Schema(
    {
        probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        probatio.Required(ATTR_FILE_ID): _FILE_ID,
        probatio.Optional(ATTR_FILE_TYPE, default=".tar"): probatio.All(cv.string, probatio.Strip),
        # Only for an MQTT-only entry, which cannot download the package to measure it.
        probatio.Optional(ATTR_SIZE): probatio.All(whole_number, probatio.Range(min=1)),
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
# The package to install: one of the two, checked by the action with a translated error.
_PACKAGE_FIELDS: dict[Any, Any] = {
    probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
    probatio.Optional(ATTR_VERSION): VERSION_VALIDATOR,
    probatio.Optional(ATTR_FILE_ID): _FILE_ID,
}
INSTALL_SCHEMA = cv.make_entity_service_schema(_PACKAGE_FIELDS)
_COUNT = probatio.All(probatio.Coerce(int), probatio.Range(min=1))
START_ROLLOUT_SCHEMA = cv.make_entity_service_schema(
    {
        **_PACKAGE_FIELDS,
        probatio.Optional(ATTR_NAME): probatio.All(
            cv.string, probatio.Strip, probatio.Length(min=1, max=100)
        ),
        probatio.Optional(ATTR_CANARY_COUNT, default=DEFAULT_CANARY_COUNT): probatio.All(
            probatio.Coerce(int), probatio.Range(min=0)
        ),
        probatio.Optional(ATTR_WAVE_SIZE, default=DEFAULT_WAVE_SIZE): _COUNT,
        probatio.Optional(ATTR_MAX_OPEN): _COUNT,
        probatio.Optional(ATTR_FAILURE_THRESHOLD_COUNT): _COUNT,
        probatio.Optional(ATTR_FAILURE_THRESHOLD_PERCENT): probatio.All(
            probatio.Coerce(float), probatio.Range(min=0, max=100, min_included=False)
        ),
        probatio.Optional(ATTR_PAUSE_BETWEEN_WAVES, default=timedelta(0)): cv.positive_time_period,
        probatio.Inclusive(ATTR_WINDOW_START, "window"): cv.time,
        probatio.Inclusive(ATTR_WINDOW_END, "window"): cv.time,
    }
)
ROLLOUT_SCHEMA = probatio.Schema(
    {
        probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        probatio.Required(ATTR_ROLLOUT): probatio.All(cv.string, probatio.Strip),
    }
)
LIST_ROLLOUTS_SCHEMA = LIST_PACKAGES_SCHEMA


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
    size: int | None = None,
) -> Package:
    """Register a package: downloaded and checked in console mode, as described in MQTT-only mode.

    A console entry downloads the package with a device's credentials, checks the firmware can
    apply it and learns its size; `size` must then be left out. An MQTT-only entry has no device
    key to download with, so the user's type and `size` are taken as they are: the firmware
    needs the exact size in the request. Nothing is stored unless every check passes.
    `sw_commit` defaults to the one the package's `version.py` names (console mode only).
    Raises translated `ServiceValidationError`/`HomeAssistantError`.
    """
    client = runtime.client
    if client is None and size is None:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="size_required")
    if client is not None and size is not None:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="size_measured")
    if client is None and file_type not in FILE_TYPES:
        # Without a download nothing else checks that the firmware knows the type.
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_file_type",
            translation_placeholders={"file_type": file_type, "types": ", ".join(FILE_TYPES)},
        )
    try:
        # Checks the id, type and size the way the firmware will, before anything is downloaded.
        OtaRequest(file_id, file_type, size or 1)
    except ProtocolError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_package",
            translation_placeholders={"error": str(err)},
        ) from err
    try:
        # Checked before the download to save it, and again when the package is stored.
        runtime.catalogue.check_file_id_free(file_id)
        runtime.catalogue.check_version_free(file_id, version)
        if client is None:
            assert size is not None  # noqa: S101 - refused above when missing.
            return await runtime.catalogue.async_add(
                file_id=file_id,
                file_type=file_type,
                size=size,
                sha256=None,
                version=version,
                release_notes=release_notes,
                hardware=hardware,
                sw_commit=sw_commit,
            )
        download = await _async_download(runtime, client, file_id)
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
    except PackageRegisteredError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="package_registered",
            translation_placeholders={"file_id": err.file_id, "version": err.version},
        ) from err


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


async def _async_download(
    runtime: InsighioOtaRuntimeData, client: ConsoleClient, file_id: str
) -> PackageDownload:
    """Download a package with the first device's credentials, as a device would get it."""
    devices = list(runtime.coordinator.data.values())
    if not devices:
        raise ServiceValidationError(
            translation_domain=DOMAIN, translation_key="no_device_to_verify"
        )
    try:
        return await client.download_package(file_id, devices[0])
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
        size=call.data.get(ATTR_SIZE),
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
    return [(entry, device_id) for entry, device_id, _ in _targeted_registry_devices(call)]


def _targeted_registry_devices(
    call: ServiceCall,
) -> list[tuple[InsighioOtaConfigEntry, str, dr.BaseDeviceEntry]]:
    """Return what `_targeted_devices` does, with each device's registry entry."""
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
    targets: list[tuple[InsighioOtaConfigEntry, str, dr.BaseDeviceEntry]] = []
    for device_id in sorted(device_ids):
        device = device_registry.async_get(device_id)
        if device is None or (entry := loaded.get(device.config_entry_id)) is None:
            continue
        # The account's own device (fleet sensors) carries our domain too, with the entry id as
        # its identifier: it is no console device.
        targets.extend(
            (entry, identifier, device)
            for domain, identifier in device.identifiers
            if domain == DOMAIN and identifier != entry.entry_id
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


def _package_for(runtime: InsighioOtaRuntimeData, call: ServiceCall) -> Package:
    """Return the package an action names by version or file id (translated when unknown)."""
    catalogue = runtime.catalogue
    if (version := call.data.get(ATTR_VERSION)) is not None:
        if (package := catalogue.by_version(version)) is None:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="unknown_version",
                translation_placeholders={"version": version},
            )
        return package
    file_id = call.data[ATTR_FILE_ID]
    if (package := catalogue.by_file_id(file_id)) is None:
        raise _unknown_package(file_id)
    return package


def _package_targets(
    call: ServiceCall,
) -> list[tuple[InsighioOtaConfigEntry, str, dr.BaseDeviceEntry]]:
    """Check the action names one package, then return its targeted devices (at least one)."""
    if (ATTR_VERSION in call.data) == (ATTR_FILE_ID in call.data):
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="package_required")
    entry_id = call.data.get(ATTR_CONFIG_ENTRY_ID)
    targets = [
        target
        for target in _targeted_registry_devices(call)
        if entry_id is None or target[0].entry_id == entry_id
    ]
    if not targets:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_target_devices")
    return targets


def _device_name(device_id: str, device: dr.BaseDeviceEntry) -> str:
    """Return the name the user sees for a console device."""
    return device.name_by_user or device.name or device_id


async def _async_install_action(call: ServiceCall) -> ServiceResponse:
    """Request a package for every targeted device that can take it; report each device."""
    results: list[dict[str, Any]] = []
    for entry, device_id, registered in _package_targets(call):
        runtime = entry.runtime_data
        result: dict[str, Any] = {
            "device_id": registered.id,
            ATTR_INSIGHIO_DEVICE_ID: device_id,
            ATTR_NAME: _device_name(device_id, registered),
            "result": RESULT_QUEUED,
            ATTR_REASON: None,
        }
        try:
            package = _package_for(runtime, call)
            await runtime.tracker.async_request(device_id, package)
        except HomeAssistantError as err:
            # One refusal (a guard, a busy device, a failed publish) does not stop the others.
            result.update({"result": RESULT_REFUSED, ATTR_REASON: str(err)})
            # A queued device fires the tracker's "queued" status; a refused one fires this, so
            # an automation sees every device's result.
            call.hass.bus.async_fire(EVENT_INSTALL_REFUSED, dict(result))
        results.append(result)
    results.sort(key=lambda r: (r[ATTR_NAME].casefold(), r[ATTR_INSIGHIO_DEVICE_ID]))
    response: list[Any] = results
    return {ATTR_RESULTS: response}


async def _async_start_rollout_action(call: ServiceCall) -> ServiceResponse:
    """Plan a rollout of a package to the targeted devices and start its canary wave."""
    targets = _package_targets(call)
    entries = {entry.entry_id: entry for entry, _, _ in targets}
    if len(entries) > 1:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="entry_ambiguous")
    entry = next(iter(entries.values()))
    runtime = entry.runtime_data
    rollout = await runtime.rollouts.async_start(
        package=_package_for(runtime, call),
        devices={device_id: _device_name(device_id, device) for _, device_id, device in targets},
        name=call.data.get(ATTR_NAME),
        canary_count=call.data[ATTR_CANARY_COUNT],
        wave_size=call.data[ATTR_WAVE_SIZE],
        max_open=call.data.get(ATTR_MAX_OPEN),
        failure_threshold_count=call.data.get(ATTR_FAILURE_THRESHOLD_COUNT),
        failure_threshold_percent=call.data.get(ATTR_FAILURE_THRESHOLD_PERCENT),
        pause_between_waves=call.data[ATTR_PAUSE_BETWEEN_WAVES],
        window=(
            (call.data[ATTR_WINDOW_START], call.data[ATTR_WINDOW_END])
            if ATTR_WINDOW_START in call.data
            else None
        ),
    )
    return rollout.summary()


def _find_rollout(call: ServiceCall) -> tuple[RolloutManager, Rollout]:
    """Return the rollout an action names (id or name), in the entry named or any loaded one."""
    entry_id = call.data.get(ATTR_CONFIG_ENTRY_ID)
    key = call.data[ATTR_ROLLOUT]
    for entry in call.hass.config_entries.async_loaded_entries(DOMAIN):
        if entry_id is not None and entry.entry_id != entry_id:
            continue
        manager: RolloutManager = entry.runtime_data.rollouts
        if (rollout := manager.find(key)) is not None:
            return manager, rollout
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="unknown_rollout",
        translation_placeholders={"rollout": key},
    )


async def _async_pause_rollout_action(call: ServiceCall) -> None:
    """Start no more jobs of a rollout; the waiting ones go on."""
    manager, rollout = _find_rollout(call)
    await manager.async_pause(rollout)


async def _async_resume_rollout_action(call: ServiceCall) -> None:
    """Go on with a paused rollout."""
    manager, rollout = _find_rollout(call)
    await manager.async_resume(rollout)


async def _async_abort_rollout_action(call: ServiceCall) -> None:
    """Stop a rollout for good and cancel its waiting jobs."""
    manager, rollout = _find_rollout(call)
    await manager.async_abort(rollout)


async def _async_list_rollouts_action(call: ServiceCall) -> ServiceResponse:
    """Respond with the rollouts of the loaded entries (or the one named), oldest first."""
    entry_id = call.data.get(ATTR_CONFIG_ENTRY_ID)
    rollouts: list[Any] = [
        {**rollout.summary(), ATTR_CONFIG_ENTRY_ID: entry.entry_id}
        for entry in call.hass.config_entries.async_loaded_entries(DOMAIN)
        if entry_id is None or entry.entry_id == entry_id
        for rollout in entry.runtime_data.rollouts.rollouts
    ]
    return {ATTR_ROLLOUTS: rollouts}


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
    hass.services.async_register(
        DOMAIN,
        SERVICE_INSTALL,
        _async_install_action,
        schema=INSTALL_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_START_ROLLOUT,
        _async_start_rollout_action,
        schema=START_ROLLOUT_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    for service, handler in (
        (SERVICE_PAUSE_ROLLOUT, _async_pause_rollout_action),
        (SERVICE_RESUME_ROLLOUT, _async_resume_rollout_action),
        (SERVICE_ABORT_ROLLOUT, _async_abort_rollout_action),
    ):
        hass.services.async_register(DOMAIN, service, handler, schema=ROLLOUT_SCHEMA)
    hass.services.async_register(
        DOMAIN,
        SERVICE_LIST_ROLLOUTS,
        _async_list_rollouts_action,
        schema=LIST_ROLLOUTS_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
