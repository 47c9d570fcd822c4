"""One OTA status `sensor` per device: where its last OTA job is, for dashboards and automations."""

from typing import Any, Final

from homeassistant.components.sensor import SensorDeviceClass, SensorEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import InsighioOtaConfigEntry
from .entity import InsighioOtaEntity, async_add_entities_per_device
from .tracker import JobState

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
    """Add a status sensor for each device, and for every device the console lists later."""
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
