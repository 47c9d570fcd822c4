"""insigh.io OTA: over-the-air updates of insigh.io devices through Home Assistant's MQTT."""

from collections.abc import Callable
from typing import Any

from homeassistant.components import mqtt
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv, device_registry as dr
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.storage import Store
from homeassistant.helpers.typing import ConfigType

from .catalogue import PackageCatalogue
from .console import ConsoleClient
from .const import CONF_API_KEY, CONF_CONSOLE_URL, DOMAIN
from .coordinator import (
    ConsoleDeviceCoordinator,
    InsighioOtaConfigEntry,
    InsighioOtaCoordinator,
    InsighioOtaRuntimeData,
    MqttDeviceCoordinator,
    is_mqtt_only,
)
from .jobs import TrackerSettings
from .repairs import PackageWatch, async_delete_mqtt_issue, async_raise_mqtt_issue
from .rollout import RolloutManager
from .services import async_setup_services
from .tracker import OtaTracker

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)
PLATFORMS: list[Platform] = [Platform.EVENT, Platform.SENSOR, Platform.UPDATE]
# What an entry keeps in `.storage`, each under `insighio_ota.<entry id>.<kind>`.
STORED_KINDS = ("packages", "jobs", "rollouts", "devices")


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the actions, which work for every config entry."""
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: InsighioOtaConfigEntry) -> bool:
    """Load the devices, the packages and the jobs, then follow the devices' OTA topics."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        if not mqtt.mqtt_config_entry_enabled(hass):
            # Not a passing state: nothing loads until the user sets MQTT up, so say what to do.
            async_raise_mqtt_issue(hass)
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="mqtt_unavailable")
    async_delete_mqtt_issue(hass)
    client: ConsoleClient | None = None
    coordinator: InsighioOtaCoordinator
    # An MQTT-only entry learns its devices from their own traffic, which the tracker hands over.
    device_seen: Callable[[mqtt.ReceiveMessage], None] | None = None
    if is_mqtt_only(entry):
        coordinator = devices = MqttDeviceCoordinator(hass, entry)
        device_seen = devices.async_device_seen
        entry.async_on_unload(devices.async_unload)
    else:
        client = ConsoleClient(
            async_get_clientsession(hass),
            entry.data[CONF_CONSOLE_URL],
            token=entry.data[CONF_API_KEY],
        )
        coordinator = ConsoleDeviceCoordinator(hass, entry, client)
    await coordinator.async_config_entry_first_refresh()
    catalogue = PackageCatalogue(hass, entry.entry_id)
    await catalogue.async_load()
    tracker = OtaTracker(
        hass,
        entry.entry_id,
        lambda: coordinator.data,
        # Read at every use, so a change in the options applies without a reload.
        lambda: TrackerSettings.from_options(entry.options),
        catalogue,
        device_seen=device_seen,
    )
    await tracker.async_load()
    # Follows the jobs before the tracker resumes them, so none ends unseen.
    rollouts = RolloutManager(hass, entry.entry_id, tracker, catalogue, lambda: coordinator.data)
    await rollouts.async_load()
    entry.runtime_data = InsighioOtaRuntimeData(client, coordinator, catalogue, tracker, rollouts)
    entry.async_on_unload(tracker.async_unload)
    entry.async_on_unload(rollouts.async_unload)

    await tracker.async_subscribe(coordinator.control_channels, coordinator.data_channels)
    await rollouts.async_restore()

    @callback
    def _follow_new_channels() -> None:
        # A device added in another project of the account brings new channels.
        entry.async_create_background_task(
            hass,
            tracker.async_subscribe(coordinator.control_channels, coordinator.data_channels),
            "insighio_ota subscribe",
        )

    entry.async_on_unload(coordinator.async_add_listener(_follow_new_channels))
    if client is not None:
        # Only a console can tell whether it still serves a package.
        packages = PackageWatch(hass, entry)
        entry.async_on_unload(packages.async_start())
        entry.async_on_unload(packages.async_unload)
    # The update entities first: should the fleet outgrow HA's cap on enabled entities per entry,
    # the entities it drops are never a device's update entity.
    await hass.config_entries.async_forward_entry_setups(entry, [Platform.UPDATE])
    await hass.config_entries.async_forward_entry_setups(
        entry, [platform for platform in PLATFORMS if platform is not Platform.UPDATE]
    )
    return True


async def async_unload_entry(hass: HomeAssistant, entry: InsighioOtaConfigEntry) -> bool:
    """Unload the entities; the tracker stops through `async_on_unload`."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_entry(hass: HomeAssistant, entry: InsighioOtaConfigEntry) -> None:
    """Delete the entry's stored packages, jobs, device facts, rollouts and found devices.

    They are keyed by the entry id, which no later entry reuses: left behind, they would stay in
    `.storage` for good, with the device ids and serials they name.
    """
    for kind in STORED_KINDS:
        await Store[dict[str, Any]](hass, 1, f"{DOMAIN}.{entry.entry_id}.{kind}").async_remove()


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: InsighioOtaConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the user remove a device the console no longer lists; a listed one would come back.

    An MQTT-only entry forgets the device instead, which takes it off the list until it talks on
    the project's channels again. The entry's own device (fleet sensors) always stays.
    """
    coordinator = entry.runtime_data.coordinator
    tracker = entry.runtime_data.tracker
    discovered = coordinator if isinstance(coordinator, MqttDeviceCoordinator) else None
    ours = {value for domain, value in device.identifiers if domain == DOMAIN}
    if entry.entry_id in ours or (discovered is None and ours & coordinator.data.keys()):
        return False
    for device_id in ours:
        # A removed device keeps no request on the broker, nor a job that would end later in a
        # notice about a device the user deleted.
        if (job := tracker.job(device_id)) is not None and job.is_open:
            await tracker.async_cancel(device_id)
        if discovered is not None:
            await discovered.async_forget(device_id)
    return True
