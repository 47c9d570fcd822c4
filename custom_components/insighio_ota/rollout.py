"""Staged rollouts: one package to many devices, a canary first, then waves, stopping on failures.

A rollout orders its devices by name and cuts them into waves: the canary wave (`canary_count`
devices), then waves of `wave_size`. Within a wave at most `max_open` jobs wait at once; the next
device starts when a job ends. The next wave starts only when every device of the current one has
ended, the pause between waves has elapsed and the failure threshold is not crossed. Crossing it
pauses the rollout (notification and repair issue); resuming counts failures afresh.

Jobs are the tracker's: the manager only asks for them (`async_request`) and follows their changes
(`async_add_job_listener`). A device that cannot take the package (guard, hardware, a job already
waiting) is skipped with the reason, which is not a failure. Rollouts live in a `Store`, so a
restart resumes them: a job that ended while HA was down counts by its end.
"""

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
import re
from typing import Any, Final
import uuid

from homeassistant.components import persistent_notification
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_track_point_in_utc_time
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .catalogue import Package, PackageCatalogue
from .console import ConsoleDevice
from .const import DOMAIN, LOGGER
from .jobs import JobState, OtaJob
from .tracker import OtaTracker

STORAGE_VERSION: Final = 1
DEFAULT_CANARY_COUNT: Final = 1
DEFAULT_WAVE_SIZE: Final = 5
# Job ends are written this long after they happen, together (see `_schedule_save`).
ROLLOUTS_SAVE_DELAY: Final = 1
# Ended rollouts kept for the record (sensors, `list_rollouts`); active ones are always kept.
ENDED_ROLLOUTS_KEPT: Final = 10
ISSUE_THRESHOLD: Final = "rollout_threshold"
REASON_ABORTED: Final = "the rollout was aborted"
REASON_USER_PAUSE: Final = "paused by the user"
REASON_LOST: Final = "the job was lost"


class RolloutState(StrEnum):
    """Where a rollout is."""

    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    ABORTED = "aborted"


class DeviceStatus(StrEnum):
    """Where a device of a rollout is."""

    PENDING = "pending"
    SKIPPED = "skipped"
    QUEUED = "queued"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE_STATES: Final = frozenset({RolloutState.RUNNING, RolloutState.PAUSED})
_ATTEMPTED: Final = frozenset({DeviceStatus.QUEUED, DeviceStatus.SUCCEEDED, DeviceStatus.FAILED})


@dataclass(slots=True)
class RolloutDevice:
    """One device of a rollout and what became of it."""

    device_id: str
    name: str
    status: DeviceStatus = DeviceStatus.PENDING
    reason: str | None = None
    # The tracker's job started for the device, which the rollout follows.
    job_id: str | None = None
    # The rollout's `epoch` when the job started: a resume after the threshold was crossed
    # starts a new epoch, and only the jobs of the current one count towards the threshold.
    epoch: int = 0

    @property
    def ended(self) -> bool:
        """Return True once nothing more will happen to the device in this rollout."""
        return self.status not in (DeviceStatus.PENDING, DeviceStatus.QUEUED)


@dataclass(slots=True)
class Rollout:
    """A package rolled out to devices in waves."""

    rollout_id: str
    name: str
    file_id: str
    version: str
    devices: list[RolloutDevice]
    # Device ids per wave, the canary wave first.
    waves: list[list[str]]
    canary_count: int = DEFAULT_CANARY_COUNT
    wave_size: int = DEFAULT_WAVE_SIZE
    max_open: int = DEFAULT_WAVE_SIZE
    failure_threshold_count: int | None = None
    failure_threshold_percent: float | None = None
    pause_between_waves: float = 0
    # A maintenance window of this rollout ("HH:MM:SS" local), instead of the entry's.
    window_start: str | None = None
    window_end: str | None = None
    state: RolloutState = RolloutState.RUNNING
    pause_reason: str | None = None
    wave_index: int = 0
    next_wave_at: str | None = None
    epoch: int = 0
    created_at: str = field(default_factory=lambda: dt_util.utcnow().isoformat())
    updated_at: str = field(default_factory=lambda: dt_util.utcnow().isoformat())

    @property
    def current_wave(self) -> int:
        """Return the wave under way, 1-based for display."""
        return self.wave_index + 1

    @property
    def window(self) -> tuple[time, time] | None:
        """Return the rollout's own maintenance window, if it has one."""
        if self.window_start is None or self.window_end is None:
            return None
        return time.fromisoformat(self.window_start), time.fromisoformat(self.window_end)

    @property
    def wave_count(self) -> int:
        """Return how many waves the rollout has."""
        return len(self.waves)

    @property
    def active(self) -> bool:
        """Return True while the rollout is running or paused."""
        return self.state in ACTIVE_STATES

    def device(self, device_id: str) -> RolloutDevice | None:
        """Return the rollout's record of a device."""
        return next((d for d in self.devices if d.device_id == device_id), None)

    def counts(self) -> dict[str, int]:
        """Return how many devices are in each status (every status, zeros included)."""
        counts = dict.fromkeys((status.value for status in DeviceStatus), 0)
        for device in self.devices:
            counts[device.status.value] += 1
        return counts

    def wave_devices(self, index: int) -> list[RolloutDevice]:
        """Return the devices of a wave (0-based), in order."""
        records = {device.device_id: device for device in self.devices}
        return [records[device_id] for device_id in self.waves[index]]

    def threshold_crossed(self) -> tuple[int, int] | None:
        """Return (failed, attempted) of the current epoch when they cross the threshold."""
        attempted = [d for d in self.devices if d.epoch == self.epoch and d.status in _ATTEMPTED]
        failed = sum(1 for d in attempted if d.status is DeviceStatus.FAILED)
        if not failed:
            return None
        by_count = self.failure_threshold_count is not None and (
            failed >= self.failure_threshold_count
        )
        by_percent = self.failure_threshold_percent is not None and (
            failed * 100 >= self.failure_threshold_percent * len(attempted)
        )
        return (failed, len(attempted)) if by_count or by_percent else None

    def as_dict(self) -> dict[str, Any]:
        """Return the rollout as JSON-ready data (storage)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        """Rebuild a stored rollout."""
        devices = [
            RolloutDevice(**{**device, "status": DeviceStatus(device["status"])})
            for device in data["devices"]
        ]
        return cls(
            **{
                **data,
                "devices": devices,
                "waves": [list(wave) for wave in data["waves"]],
                "state": RolloutState(data["state"]),
            }
        )

    def summary(self) -> dict[str, Any]:
        """Return the rollout as actions respond with it."""
        return {
            "rollout_id": self.rollout_id,
            "name": self.name,
            "state": self.state.value,
            "version": self.version,
            "file_id": self.file_id,
            "pause_reason": self.pause_reason,
            "current_wave": self.current_wave,
            "wave_count": self.wave_count,
            "next_wave_at": self.next_wave_at,
            "counts": self.counts(),
            "waves": [
                [
                    {
                        "insighio_device_id": device.device_id,
                        "name": device.name,
                        "status": device.status.value,
                        "reason": device.reason,
                    }
                    for device in self.wave_devices(index)
                ]
                for index in range(self.wave_count)
            ],
        }


def plan_waves(device_ids: Iterable[str], canary_count: int, wave_size: int) -> list[list[str]]:
    """Cut ordered devices into the canary wave (if any), then waves of `wave_size`."""
    ordered = list(device_ids)
    waves = [ordered[:canary_count]] if canary_count > 0 and ordered else []
    rest = ordered[canary_count:] if canary_count > 0 else ordered
    waves.extend(rest[i : i + wave_size] for i in range(0, len(rest), wave_size))
    return waves


def job_outcome(job: OtaJob) -> DeviceStatus | None:
    """Return what an ended job means for its device, None while it is open."""
    if job.is_open:
        return None
    if job.state is JobState.VERIFIED or job.unverified:
        return DeviceStatus.SUCCEEDED
    return DeviceStatus.FAILED


class RolloutManager:
    """The rollouts of one config entry."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry_id: str,
        tracker: OtaTracker,
        catalogue: PackageCatalogue,
        devices: Callable[[], Mapping[str, ConsoleDevice]],
    ) -> None:
        """Prepare the manager; call `async_load`, then `async_restore` once MQTT is followed."""
        self._hass = hass
        self._entry_id = entry_id
        self._tracker = tracker
        self._catalogue = catalogue
        self._devices = devices
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.rollouts"
        )
        self._rollouts: dict[str, Rollout] = {}
        self._listeners: list[CALLBACK_TYPE] = []
        self._timers: dict[str, CALLBACK_TYPE] = {}
        self._unsubscribe_jobs: CALLBACK_TYPE | None = None
        # One advance at a time: starting jobs awaits MQTT, and job ends arrive meanwhile.
        self._lock = asyncio.Lock()
        self._unloaded = False
        # True from a delayed write's scheduling until it runs (see `_schedule_save`).
        self._save_pending = False

    # -- lifecycle -------------------------------------------------------------------------

    async def async_load(self) -> None:
        """Read the rollouts, settle the jobs that ended while HA was down, follow the jobs."""
        stored = await self._store.async_load() or {}
        for data in stored.get("rollouts", []):
            try:
                rollout = Rollout.from_dict(data)
            except TypeError, ValueError, KeyError:
                LOGGER.warning("Dropping an unreadable stored rollout")
                continue
            self._rollouts[rollout.rollout_id] = rollout
        for rollout in self._rollouts.values():
            self._settle_stored_jobs(rollout)
        self._unsubscribe_jobs = self._tracker.async_add_job_listener(self._on_job)

    async def async_restore(self) -> None:
        """Start what running rollouts may start now, and their next-wave timers."""
        for rollout in self.rollouts:
            await self._async_advance(rollout)
        await self._async_save()

    async def async_unload(self) -> None:
        """Stop following jobs and timers; write what is not saved yet."""
        self._unloaded = True
        if self._unsubscribe_jobs is not None:
            self._unsubscribe_jobs()
            self._unsubscribe_jobs = None
        for cancel in self._timers.values():
            cancel()
        self._timers.clear()
        await self._async_save()

    # -- what sensors and actions read -----------------------------------------------------

    @property
    def rollouts(self) -> list[Rollout]:
        """Return every rollout kept, oldest first."""
        return list(self._rollouts.values())

    def find(self, key: str) -> Rollout | None:
        """Return the rollout with this id, else the one with this name (an active one first)."""
        if (rollout := self._rollouts.get(key)) is not None:
            return rollout
        named = [r for r in self._rollouts.values() if r.name == key]
        active = [r for r in named if r.active]
        candidates = active or named
        return candidates[-1] if candidates else None

    @callback
    def async_add_listener(self, listener: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `listener` after every change of any rollout; returns the function to stop."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- actions ---------------------------------------------------------------------------

    async def async_start(
        self,
        *,
        package: Package,
        devices: Mapping[str, str],
        name: str | None = None,
        canary_count: int = DEFAULT_CANARY_COUNT,
        wave_size: int = DEFAULT_WAVE_SIZE,
        max_open: int | None = None,
        failure_threshold_count: int | None = None,
        failure_threshold_percent: float | None = None,
        pause_between_waves: timedelta = timedelta(0),
        window: tuple[time, time] | None = None,
    ) -> Rollout:
        """Plan a rollout of `package` to `devices` (console id -> name) and start its canary.

        Refused (translated) when a device is still pending or waiting in another active
        rollout.
        """
        for device_id, device_name in devices.items():
            for other in self._rollouts.values():
                record = other.device(device_id)
                if other.active and record is not None and not record.ended:
                    raise ServiceValidationError(
                        translation_domain=DOMAIN,
                        translation_key="device_in_rollout",
                        translation_placeholders={"device": device_name, "rollout": other.name},
                    )
        ordered = sorted(devices.items(), key=lambda item: (_natural_key(item[1]), item[0]))
        now = dt_util.now()
        rollout = Rollout(
            rollout_id=uuid.uuid4().hex[:12],
            name=name or f"{package.version} {now:%Y-%m-%d %H:%M}",
            file_id=package.file_id,
            version=package.version,
            devices=[RolloutDevice(device_id, device_name) for device_id, device_name in ordered],
            waves=plan_waves((device_id for device_id, _ in ordered), canary_count, wave_size),
            canary_count=canary_count,
            wave_size=wave_size,
            max_open=max_open or wave_size,
            failure_threshold_count=failure_threshold_count,
            failure_threshold_percent=failure_threshold_percent,
            pause_between_waves=pause_between_waves.total_seconds(),
            window_start=window[0].isoformat() if window else None,
            window_end=window[1].isoformat() if window else None,
        )
        self._rollouts[rollout.rollout_id] = rollout
        self._prune()
        await self._async_advance(rollout)
        await self._async_save()
        self._notify_listeners()
        return rollout

    async def async_pause(self, rollout: Rollout) -> None:
        """Start no more jobs; the waiting ones go on and are counted."""
        if rollout.state is not RolloutState.RUNNING:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="rollout_not_running",
                translation_placeholders={"rollout": rollout.name, "state": rollout.state},
            )
        self._set_paused(rollout, REASON_USER_PAUSE)
        await self._async_save()
        self._notify_listeners()

    async def async_resume(self, rollout: Rollout) -> None:
        """Go on after a pause; failures before it no longer count towards the threshold."""
        if rollout.state is not RolloutState.PAUSED:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="rollout_not_paused",
                translation_placeholders={"rollout": rollout.name, "state": rollout.state},
            )
        rollout.state = RolloutState.RUNNING
        rollout.pause_reason = None
        rollout.epoch += 1
        self._clear_alerts(rollout)
        self._touch(rollout)
        await self._async_advance(rollout)
        await self._async_save()
        self._notify_listeners()

    async def async_abort(self, rollout: Rollout) -> None:
        """Start nothing more and cancel the rollout's waiting jobs; their devices are skipped."""
        if not rollout.active:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="rollout_ended",
                translation_placeholders={"rollout": rollout.name, "state": rollout.state},
            )
        rollout.state = RolloutState.ABORTED
        rollout.pause_reason = None
        rollout.next_wave_at = None
        self._cancel_timer(rollout.rollout_id)
        self._clear_alerts(rollout)
        for device in rollout.devices:
            if device.status is DeviceStatus.PENDING:
                device.status, device.reason = DeviceStatus.SKIPPED, REASON_ABORTED
        for device in rollout.devices:
            if device.status is not DeviceStatus.QUEUED:
                continue
            job = self._tracker.job(device.device_id)
            if job is not None and job.job_id == device.job_id and job.is_open:
                # The cancel comes back through `_on_job`, which records the device.
                await self._tracker.async_cancel(device.device_id)
        self._touch(rollout)
        await self._async_save()
        self._notify_listeners()

    # -- following jobs --------------------------------------------------------------------

    @callback
    def _on_job(self, job: OtaJob) -> None:
        """Record a rollout job's end; a running rollout then starts what it may."""
        if self._unloaded or (outcome := job_outcome(job)) is None:
            return
        for rollout in self._rollouts.values():
            device = rollout.device(job.device_id)
            if (
                device is None
                or device.status is not DeviceStatus.QUEUED
                or device.job_id != job.job_id
            ):
                continue
            self._record(rollout, device, outcome, job.reason)
            if rollout.state is RolloutState.RUNNING:
                self._hass.async_create_task(
                    self._async_advance_and_save(rollout), f"{DOMAIN} rollout {rollout.name}"
                )
            else:
                self._schedule_save()
            self._notify_listeners()

    def _record(
        self, rollout: Rollout, device: RolloutDevice, outcome: DeviceStatus, reason: str | None
    ) -> None:
        """Put a device's job end in the rollout; pause it when the threshold is crossed."""
        if rollout.state is RolloutState.ABORTED and outcome is DeviceStatus.FAILED:
            # Cancelled by the abort (or ended meanwhile): not the device's failure.
            outcome, reason = DeviceStatus.SKIPPED, reason or REASON_ABORTED
        device.status, device.reason = outcome, reason
        self._touch(rollout)
        if rollout.state is RolloutState.RUNNING and (crossed := rollout.threshold_crossed()):
            self._pause_on_threshold(rollout, *crossed)

    def _settle_stored_jobs(self, rollout: Rollout) -> None:
        """Count the jobs of a stored rollout that ended while HA was not running."""
        for device in rollout.devices:
            if device.status is not DeviceStatus.QUEUED:
                continue
            job = self._tracker.job(device.device_id)
            if job is not None and job.job_id == device.job_id:
                if (outcome := job_outcome(job)) is not None:
                    self._record(rollout, device, outcome, job.reason)
                continue
            # Another job followed ours (by hand, after a restart): the history has ours.
            past = next(
                (
                    entry
                    for entry in reversed(self._tracker.history(device.device_id))
                    if entry.get("job_id") == device.job_id
                ),
                None,
            )
            outcome = job_outcome(OtaJob.from_dict(past)) if past is not None else None
            if past is None or outcome is None:
                # Gone from the tracker while still waiting: it will never end.
                self._record(rollout, device, DeviceStatus.FAILED, REASON_LOST)
                continue
            self._record(rollout, device, outcome, past.get("reason"))

    # -- moving on -------------------------------------------------------------------------

    async def _async_advance_and_save(self, rollout: Rollout) -> None:
        await self._async_advance(rollout)
        self._schedule_save()
        self._notify_listeners()

    async def _async_advance(self, rollout: Rollout) -> None:
        """Start the devices the current wave may start; move to the next wave when allowed."""
        async with self._lock:
            while self._may_start(rollout):
                wave = rollout.wave_devices(rollout.wave_index)
                # Counted once and kept up to date: a recount for each device of the wave made
                # every job end cost the square of the fleet. A job that ends meanwhile leaves
                # the count too high, which only holds a start back until its own advance.
                open_jobs = sum(1 for d in rollout.devices if d.status is DeviceStatus.QUEUED)
                for device in wave:
                    if not self._may_start(rollout):
                        return
                    if device.status is DeviceStatus.PENDING and open_jobs < rollout.max_open:
                        open_jobs += await self._async_start_device(rollout, device)
                if not all(device.ended for device in wave):
                    return
                if rollout.wave_index + 1 >= rollout.wave_count:
                    rollout.state = RolloutState.FINISHED
                    rollout.next_wave_at = None
                    self._touch(rollout)
                    return
                if not self._pause_elapsed(rollout):
                    return
                rollout.wave_index += 1
                rollout.next_wave_at = None
                self._touch(rollout)

    def _may_start(self, rollout: Rollout) -> bool:
        """Return True while the rollout may start jobs (a job end may pause it meanwhile)."""
        return not self._unloaded and rollout.state is RolloutState.RUNNING

    def _pause_elapsed(self, rollout: Rollout) -> bool:
        """Return True once the pause after the ended wave is over; else wait for it."""
        if rollout.pause_between_waves <= 0:
            return True
        now = dt_util.utcnow()
        if rollout.next_wave_at is None:
            rollout.next_wave_at = (
                now + timedelta(seconds=rollout.pause_between_waves)
            ).isoformat()
            self._touch(rollout)
        due = datetime.fromisoformat(rollout.next_wave_at)
        if now >= due:
            return True
        if rollout.rollout_id not in self._timers:

            @callback
            def _due(_now: datetime) -> None:
                self._timers.pop(rollout.rollout_id, None)
                self._hass.async_create_task(
                    self._async_advance_and_save(rollout), f"{DOMAIN} rollout {rollout.name}"
                )

            self._timers[rollout.rollout_id] = async_track_point_in_utc_time(self._hass, _due, due)
        return False

    async def _async_start_device(self, rollout: Rollout, device: RolloutDevice) -> bool:
        """Request the package for one device, or skip it with the reason it cannot take it.

        Returns True when the device's job is open (queued) afterwards.
        """
        package = self._catalogue.by_file_id(rollout.file_id)
        if package is None:
            self._pause_stalled(
                rollout,
                str(
                    ServiceValidationError(
                        translation_domain=DOMAIN,
                        translation_key="unknown_package",
                        translation_placeholders={"file_id": rollout.file_id},
                    )
                ),
            )
            return False
        try:
            await self._tracker.async_request(device.device_id, package, window=rollout.window)
        except ServiceValidationError as err:
            device.status, device.reason = DeviceStatus.SKIPPED, str(err)
        except HomeAssistantError as err:
            # MQTT refused the publish: every other device would fail the same way.
            self._pause_stalled(rollout, str(err))
            return False
        else:
            job = self._tracker.job(device.device_id)
            device.status, device.reason = DeviceStatus.QUEUED, None
            device.job_id = job.job_id if job else None
            device.epoch = rollout.epoch
        self._touch(rollout)
        self._notify_listeners()
        return device.status is DeviceStatus.QUEUED

    # -- pauses and alerts -----------------------------------------------------------------

    def _set_paused(self, rollout: Rollout, reason: str) -> None:
        rollout.state = RolloutState.PAUSED
        rollout.pause_reason = reason
        self._cancel_timer(rollout.rollout_id)
        self._touch(rollout)

    def _pause_on_threshold(self, rollout: Rollout, failed: int, attempted: int) -> None:
        """Pause a rollout whose failures crossed its threshold, and tell the user."""
        thresholds = [
            *([f"{rollout.failure_threshold_count}"] if rollout.failure_threshold_count else []),
            *(
                [f"{rollout.failure_threshold_percent:g} %"]
                if rollout.failure_threshold_percent
                else []
            ),
        ]
        threshold = " / ".join(thresholds)
        self._set_paused(
            rollout,
            f"{failed} of {attempted} devices failed (threshold {threshold})",
        )
        placeholders = {
            "name": rollout.name,
            "version": rollout.version,
            "failed": str(failed),
            "attempted": str(attempted),
            "threshold": threshold,
        }
        ir.async_create_issue(
            self._hass,
            DOMAIN,
            self._issue_id(rollout),
            is_fixable=False,
            is_persistent=True,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_THRESHOLD,
            translation_placeholders=placeholders,
        )
        persistent_notification.async_create(
            self._hass,
            f"Rollout {rollout.name} of {rollout.version} is paused: {failed} of {attempted} "
            f"devices failed (threshold {threshold}). Resume or abort it with the "
            f"insighio_ota.resume_rollout or insighio_ota.abort_rollout action.",
            title="insigh.io OTA rollout paused",
            notification_id=self._notification_id(rollout),
        )

    def _pause_stalled(self, rollout: Rollout, reason: str) -> None:
        """Pause a rollout that cannot start its next device (MQTT, package), and tell the user."""
        self._set_paused(rollout, reason)
        persistent_notification.async_create(
            self._hass,
            f"Rollout {rollout.name} of {rollout.version} is paused: {reason}. Resume it once "
            "this is solved.",
            title="insigh.io OTA rollout paused",
            notification_id=self._notification_id(rollout),
        )

    def _clear_alerts(self, rollout: Rollout) -> None:
        ir.async_delete_issue(self._hass, DOMAIN, self._issue_id(rollout))
        persistent_notification.async_dismiss(self._hass, self._notification_id(rollout))

    @staticmethod
    def _issue_id(rollout: Rollout) -> str:
        return f"{ISSUE_THRESHOLD}_{rollout.rollout_id}"

    @staticmethod
    def _notification_id(rollout: Rollout) -> str:
        return f"{DOMAIN}_rollout_{rollout.rollout_id}"

    # -- housekeeping ----------------------------------------------------------------------

    def _cancel_timer(self, rollout_id: str) -> None:
        if cancel := self._timers.pop(rollout_id, None):
            cancel()

    @staticmethod
    def _touch(rollout: Rollout) -> None:
        rollout.updated_at = dt_util.utcnow().isoformat()

    def _prune(self) -> None:
        """Forget the oldest ended rollouts beyond `ENDED_ROLLOUTS_KEPT`."""
        ended = [r for r in self._rollouts.values() if not r.active]
        for rollout in ended[: max(0, len(ended) - ENDED_ROLLOUTS_KEPT)]:
            del self._rollouts[rollout.rollout_id]

    def _notify_listeners(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _data_to_save(self) -> dict[str, Any]:
        # Called when the write happens: from now on a change needs a write of its own.
        self._save_pending = False
        return {"rollouts": [rollout.as_dict() for rollout in self._rollouts.values()]}

    @callback
    def _schedule_save(self) -> None:
        """Write the rollouts soon, once for every job end until then.

        A write serializes every device of every rollout; at each job end of a wave that would
        cost the square of the fleet. HA writes what is pending when it stops.

        HA's `Store.async_delay_save` moves a pending write to the latest time asked for, so it
        is asked once per write: a wave whose ends keep coming would otherwise never be written.
        After the unload's own write nothing is scheduled (a reload may have read the store).
        """
        if self._save_pending or self._unloaded:
            return
        self._save_pending = True
        self._store.async_delay_save(self._data_to_save, ROLLOUTS_SAVE_DELAY)

    async def _async_save(self) -> None:
        await self._store.async_save(self._data_to_save())


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort "Sensor 2" before "Sensor 10": digit runs compare as numbers."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", name.casefold())
        if part
    )
