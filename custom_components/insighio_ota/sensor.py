"""The sensors: an OTA status per device; fleet counts per account (config entry).

Each device's sensor tells where its last OTA job is. The account's service device carries the
fleet summary (devices outdated, jobs pending, jobs failed in the last 24 h) and its rollout.
"""

from abc import abstractmethod
from datetime import datetime, timedelta
from typing import Any, Final

from homeassistant.components.sensor import SensorDeviceClass, SensorEntity, SensorStateClass
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.event import async_call_later, async_track_time_interval
from homeassistant.helpers.update_coordinator import CoordinatorEntity
from homeassistant.util import dt as dt_util

from .const import DOMAIN, MANUFACTURER
from .coordinator import InsighioOtaConfigEntry, InsighioOtaCoordinator
from .entity import InsighioOtaEntity, async_add_entities_per_device
from .jobs import JobState, OtaJob
from .rollout import Rollout, RolloutState
from .tracker import signal_device_updated

# The entity only reads the tracker's memory; nothing to throttle.
PARALLEL_UPDATES = 0

STATE_IDLE: Final = "idle"
# `unknown` is Home Assistant's own "no value" state: a sensor showing it would look like it had
# no data (the frontend and `not_from: unknown` in automations cannot tell the two apart).
STATE_OUTCOME_UNKNOWN: Final = "outcome_unknown"


def _option(state: JobState) -> str:
    """Return the sensor option of a job state."""
    return STATE_OUTCOME_UNKNOWN if state is JobState.UNKNOWN else state.value


OPTIONS: Final = [STATE_IDLE, *(_option(state) for state in JobState)]

ATTR_HISTORY: Final = "history"
# What each past job keeps in the `history` attribute: enough to read the device's OTA past,
# small enough for the state machine. The full jobs are in the diagnostics.
HISTORY_KEYS: Final = ("state", "version", "file_id", "reason", "requested_at", "updated_at")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: InsighioOtaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the account's fleet sensors, and a status sensor for each device, now and later."""
    async_add_entities(
        [
            InsighioOtaOutdatedSensor(entry),
            InsighioOtaJobsPendingSensor(entry),
            InsighioOtaJobsFailedSensor(entry),
            InsighioOtaRolloutSensor(entry),
        ]
    )
    async_add_entities_per_device(entry, async_add_entities, InsighioOtaStatusSensor)


class InsighioOtaStatusSensor(InsighioOtaEntity, SensorEntity):
    """The state of the device's last OTA job, `idle` before its first.

    Not a diagnostic entity: whether an update is queued, applied or failed is the primary thing
    this integration tells about a device, and what users build automations and dashboards on.
    The `history` attribute is left out of the recorder: it repeats up to 20 jobs at every change.
    """

    _attr_device_class = SensorDeviceClass.ENUM
    _attr_options = OPTIONS
    _attr_translation_key = "ota_status"
    _secondary_in_large_fleets = True
    _unrecorded_attributes = frozenset({ATTR_HISTORY})

    def __init__(self, entry: InsighioOtaConfigEntry, device_id: str) -> None:
        """Create the sensor of one device."""
        super().__init__(entry, device_id)
        self._attr_unique_id = f"{device_id}_ota_status"

    @property
    def native_value(self) -> str:
        """Return the last job's state, `idle` when the device never had one."""
        job = self.runtime_data.tracker.job(self.device_id)
        return STATE_IDLE if job is None else _option(job.state)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the last job's details and the device's recent jobs, oldest first."""
        tracker = self.runtime_data.tracker
        if (job := tracker.job(self.device_id)) is None:
            return None
        return {
            "file_id": job.file_id,
            "version": job.version,
            "reason": job.reason,
            "attempts": job.attempts,
            "deadline": job.deadline,
            "unverified": job.unverified,
            "request_gone": job.request_gone,
            "held_until": job.held_until,
            "requested_at": job.requested_at,
            "updated_at": job.updated_at,
            ATTR_HISTORY: [
                {
                    key: _option(JobState(old[key])) if key == "state" else old.get(key)
                    for key in HISTORY_KEYS
                }
                for old in tracker.history(self.device_id)
            ],
        }


# -- the account: fleet summary sensors ----------------------------------------------------------

# Job ends counted by the "jobs failed" sensor: every way an update did not happen but a cancel.
FAILED_STATES: Final = frozenset(
    {JobState.FAILED.value, JobState.TIMED_OUT.value, JobState.UNKNOWN.value}
)
FAILED_WINDOW: Final = timedelta(hours=24)
# Failures leave the 24 h window without any event; the count is re-read this often.
FAILED_WINDOW_REFRESH: Final = timedelta(minutes=5)
ATTR_DEVICES: Final = "devices"
# The `devices` attribute names at most this many devices; the state is the full count.
MAX_LISTED_DEVICES: Final = 20
# A count reads every listed device. For a small fleet that is cheap, and the count is written at
# every change. For a larger one, a burst of reports (a rollout's wave waking up) would recount the
# whole fleet at every message, so the changes of a moment are written together, this much later.
FLEET_COALESCE_ABOVE: Final = 100
FLEET_COALESCE_DELAY: Final = timedelta(seconds=1)


class InsighioOtaAccountEntity(CoordinatorEntity[InsighioOtaCoordinator]):
    """An entity of the account (the config entry): one service device for the fleet."""

    _attr_has_entity_name = True

    def __init__(self, entry: InsighioOtaConfigEntry, key: str) -> None:
        """Attach the entity to the account's service device."""
        super().__init__(entry.runtime_data.coordinator)
        self.runtime_data = entry.runtime_data
        self._attr_translation_key = key
        self._attr_unique_id = f"{entry.entry_id}_{key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, entry.entry_id)},
            name=entry.title,
            manufacturer=MANUFACTURER,
            model="Console account",
            entry_type=DeviceEntryType.SERVICE,
        )

    @property
    def available(self) -> bool:
        """Return True: a failed console poll leaves the last device list, and counts, right.

        The coordinator logs the outage once and its recovery once.
        """
        return True


class InsighioOtaFleetSensor(InsighioOtaAccountEntity, SensorEntity):
    """A count over the console's listed devices, refreshed by every job and catalogue change.

    The coordinator's device list refreshes it too (a device listed or gone). The names of the
    counted devices are an attribute, left out of the recorder: the count is what has a history.
    """

    _attr_state_class = SensorStateClass.MEASUREMENT
    _unrecorded_attributes = frozenset({ATTR_DEVICES})
    _write_timer: CALLBACK_TYPE | None = None

    @abstractmethod
    def _counted(self) -> list[str]:
        """Return the console ids of the counted devices (a device may count more than once)."""

    @property
    def native_value(self) -> int:
        """Return the count."""
        return len(self._counted())

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the names of the counted devices, sorted, at most `MAX_LISTED_DEVICES`."""
        registry = dr.async_get(self.hass)
        entry_id = self.coordinator.config_entry.entry_id
        devices = self.coordinator.data
        names: set[str] = set()
        for device_id in set(self._counted()):
            device = registry.async_get_device_by_identifier((DOMAIN, device_id), entry_id)
            names.add(
                (device.name_by_user or device.name or device_id)
                if device is not None
                else devices[device_id].name
            )
        return {ATTR_DEVICES: sorted(names, key=str.casefold)[:MAX_LISTED_DEVICES]}

    @callback
    def _on_job(self, _job: OtaJob) -> None:
        self._async_fleet_changed()

    @callback
    def _handle_coordinator_update(self) -> None:
        # A device listed or gone changes the count like a job does: coalesced for a large fleet,
        # whose devices may introduce themselves one message at a time.
        self._async_fleet_changed()

    @callback
    def _async_fleet_changed(self) -> None:
        """Write the count now for a small fleet; for a large one, soon with what follows."""
        if len(self.coordinator.data) <= FLEET_COALESCE_ABOVE:
            self.async_write_ha_state()
        elif self._write_timer is None:
            self._write_timer = async_call_later(
                self.hass, FLEET_COALESCE_DELAY, self._async_write_coalesced
            )

    @callback
    def _async_write_coalesced(self, _now: datetime) -> None:
        self._write_timer = None
        self.async_write_ha_state()

    @callback
    def _cancel_coalesced_write(self) -> None:
        if self._write_timer is not None:
            self._write_timer()
            self._write_timer = None

    async def async_added_to_hass(self) -> None:
        """Follow the jobs and the package catalogue."""
        await super().async_added_to_hass()
        self.async_on_remove(self._cancel_coalesced_write)
        self.async_on_remove(self.runtime_data.tracker.async_add_job_listener(self._on_job))
        self.async_on_remove(
            self.runtime_data.catalogue.async_add_listener(self._async_fleet_changed)
        )


class InsighioOtaOutdatedSensor(InsighioOtaFleetSensor):
    """How many listed devices do not run the newest package compatible with their hardware.

    The update entity's notion: the newest compatible package (`catalogue.latest_for`) against
    `tracker.installed_version`. A device no package suits is never outdated; a device whose
    installed version is unknown (no /stat yet) is outdated as soon as a package suits it,
    since nothing shows it runs that package. Versions compare by catalogue order, never as text:
    a device on a registered package newer than its latest compatible one is not outdated.
    A /stat changes the installed version without a job, so each listed device's updates are
    followed too.
    """

    def __init__(self, entry: InsighioOtaConfigEntry) -> None:
        """Create the sensor of the account."""
        super().__init__(entry, "devices_outdated")
        self._device_signals: dict[str, CALLBACK_TYPE] = {}

    def _counted(self) -> list[str]:
        tracker = self.runtime_data.tracker
        catalogue = self.runtime_data.catalogue
        outdated = []
        for device_id in self.coordinator.data:
            stat = tracker.stat(device_id)
            latest = catalogue.latest_for(stat.hw_version if stat else None)
            if latest is None:
                continue
            installed = tracker.installed_version(device_id)
            position = catalogue.order_of(installed) if installed is not None else None
            if position is None or position < catalogue.position_of(latest.file_id):
                outdated.append(device_id)
        return outdated

    @callback
    def _follow_devices(self) -> None:
        """Follow the updates (a /stat among them) of every listed device, and only those."""
        entry_id = self.coordinator.config_entry.entry_id
        listed = self.coordinator.data.keys()
        for device_id in self._device_signals.keys() - listed:
            self._device_signals.pop(device_id)()
        for device_id in listed - self._device_signals.keys():
            self._device_signals[device_id] = async_dispatcher_connect(
                self.hass, signal_device_updated(entry_id, device_id), self._async_fleet_changed
            )

    @callback
    def _stop_following_devices(self) -> None:
        for unsubscribe in self._device_signals.values():
            unsubscribe()
        self._device_signals.clear()

    @callback
    def _handle_coordinator_update(self) -> None:
        self._follow_devices()
        super()._handle_coordinator_update()

    async def async_added_to_hass(self) -> None:
        """Also follow each listed device's /stat."""
        await super().async_added_to_hass()
        self._follow_devices()
        self.async_on_remove(self._stop_following_devices)


class InsighioOtaJobsPendingSensor(InsighioOtaFleetSensor):
    """How many listed devices have an open job.

    Open: queued (held for the maintenance window included), or applied and waiting for the
    reboot's /stat. A device has at most one.
    """

    def __init__(self, entry: InsighioOtaConfigEntry) -> None:
        """Create the sensor of the account."""
        super().__init__(entry, "jobs_pending")

    def _counted(self) -> list[str]:
        return self.runtime_data.tracker.devices_in_progress()


class InsighioOtaJobsFailedSensor(InsighioOtaFleetSensor):
    """How many jobs of listed devices ended failed, timed out or unknown in the last 24 h.

    Each job counts once, by the time of its end (`updated_at`), from the device's job history
    (its last 20 jobs). A timer re-reads the window, as failures leave it without any event.
    """

    def __init__(self, entry: InsighioOtaConfigEntry) -> None:
        """Create the sensor of the account."""
        super().__init__(entry, "jobs_failed")

    def _counted(self) -> list[str]:
        tracker = self.runtime_data.tracker
        since = dt_util.utcnow() - FAILED_WINDOW
        return [
            device_id
            for device_id in self.coordinator.data
            for job in tracker.history(device_id)
            if job["state"] in FAILED_STATES and datetime.fromisoformat(job["updated_at"]) > since
        ]

    @callback
    def _on_timer(self, _now: datetime) -> None:
        self.async_write_ha_state()

    async def async_added_to_hass(self) -> None:
        """Also re-read the window regularly."""
        await super().async_added_to_hass()
        self.async_on_remove(
            async_track_time_interval(self.hass, self._on_timer, FAILED_WINDOW_REFRESH)
        )


# -- the account: the rollout sensor ---------------------------------------------------------------

ROLLOUT_OPTIONS: Final = [STATE_IDLE, *(state.value for state in RolloutState)]


class InsighioOtaRolloutSensor(InsighioOtaAccountEntity, SensorEntity):
    """The state of the account's rollout under way, else of its last one; `idle` before any.

    Under way (running or paused) wins over newer ended ones, so a rollout that needs attention
    is never hidden by one that finished meanwhile. Its counts per device status, wave and pause
    reason are attributes; `active_rollouts` tells when more than one is under way.
    """

    _attr_device_class = SensorDeviceClass.ENUM
    _attr_options = ROLLOUT_OPTIONS

    def __init__(self, entry: InsighioOtaConfigEntry) -> None:
        """Create the sensor of the account."""
        super().__init__(entry, "rollout")

    def _shown(self) -> Rollout | None:
        rollouts = self.runtime_data.rollouts.rollouts
        active = [rollout for rollout in rollouts if rollout.active]
        candidates = active or rollouts
        return candidates[-1] if candidates else None

    @property
    def native_value(self) -> str:
        """Return the rollout's state, `idle` when the account has none."""
        rollout = self._shown()
        return STATE_IDLE if rollout is None else rollout.state.value

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return what the rollout is, how far it got and why it is paused."""
        if (rollout := self._shown()) is None:
            return None
        return {
            "rollout_id": rollout.rollout_id,
            "name": rollout.name,
            "version": rollout.version,
            "file_id": rollout.file_id,
            "counts": rollout.counts(),
            "current_wave": rollout.current_wave,
            "wave_count": rollout.wave_count,
            "pause_reason": rollout.pause_reason,
            "next_wave_at": rollout.next_wave_at,
            "active_rollouts": sum(1 for r in self.runtime_data.rollouts.rollouts if r.active),
        }

    async def async_added_to_hass(self) -> None:
        """Follow every change of the account's rollouts."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.runtime_data.rollouts.async_add_listener(self.async_write_ha_state)
        )
