"""Repair issues: MQTT not set up, stale retained OTA requests, packages the console lost.

- `mqtt_not_configured`: raised while an entry cannot load because HA's MQTT integration is not
  set up (or disabled); removed once an entry loads.
- `stale_requests_<entry>`: one per entry, listing the retained OTA requests the broker replayed
  that no open job of ours stands behind (a device the console does not list, a file no job of
  ours requested, or a job that has ended). A device re-reads such a request at every wake, so the
  fix flow clears them with empty retained publishes.
- `package_unavailable_<entry>_<file id>`: a registered package the console no longer serves
  (checked when a device gave up downloading it, and once a day). The fix flow forgets it.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from homeassistant.components.repairs import ConfirmRepairFlow, RepairsFlow, RepairsFlowResult
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_track_time_interval

from .console import ConsoleError, PackageNotFoundError
from .const import DOMAIN, LOGGER

if TYPE_CHECKING:
    from .catalogue import Package
    from .coordinator import InsighioOtaConfigEntry, InsighioOtaRuntimeData
    from .jobs import OtaJob

ISSUE_MQTT: Final = "mqtt_not_configured"
ISSUE_STALE: Final = "stale_requests"
ISSUE_PACKAGE: Final = "package_unavailable"
# Why a replayed request is stale; each has its own list in the issue's description.
STALE_UNKNOWN_DEVICE: Final = "unknown_device"
STALE_NOT_OURS: Final = "not_ours"
STALE_ENDED: Final = "ended"
STALE_REASONS: Final = (STALE_UNKNOWN_DEVICE, STALE_NOT_OURS, STALE_ENDED)
# Shown for a reason with no request, so that the description reads the same in any language.
NO_REQUEST: Final = "-"
PACKAGE_CHECK_INTERVAL: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class StaleRequest:
    """A retained OTA request on the broker that no open job of ours stands behind."""

    topic: str
    device_id: str
    file_id: str
    reason: str
    device_name: str | None = None


# -- MQTT ---------------------------------------------------------------------------------------


@callback
def async_raise_mqtt_issue(hass: HomeAssistant) -> None:
    """Tell the user that MQTT must be set up before this integration can load."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        ISSUE_MQTT,
        is_fixable=False,
        is_persistent=False,
        severity=ir.IssueSeverity.ERROR,
        translation_key=ISSUE_MQTT,
        learn_more_url="https://www.home-assistant.io/integrations/mqtt/",
    )


@callback
def async_delete_mqtt_issue(hass: HomeAssistant) -> None:
    """MQTT is there: the issue is solved."""
    ir.async_delete_issue(hass, DOMAIN, ISSUE_MQTT)


# -- stale retained requests --------------------------------------------------------------------


def stale_issue_id(entry_id: str) -> str:
    """Return the id of an entry's stale-requests issue."""
    return f"{ISSUE_STALE}_{entry_id}"


def _stale_line(request: StaleRequest) -> str:
    device = (
        f"{request.device_name} (`{request.device_id}`)"
        if request.device_name
        else f"`{request.device_id}`"
    )
    return f"- {device}: `{request.file_id}`"


@callback
def async_sync_stale_issue(
    hass: HomeAssistant, entry_id: str, requests: Iterable[StaleRequest]
) -> None:
    """Raise (or update) the entry's one issue listing its stale requests; delete it when none."""
    found = sorted(requests, key=lambda request: (request.device_name or "", request.topic))
    if not found:
        ir.async_delete_issue(hass, DOMAIN, stale_issue_id(entry_id))
        return
    placeholders = {
        reason: "\n".join(_stale_line(r) for r in found if r.reason == reason) or NO_REQUEST
        for reason in STALE_REASONS
    }
    ir.async_create_issue(
        hass,
        DOMAIN,
        stale_issue_id(entry_id),
        is_fixable=True,
        is_persistent=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key=ISSUE_STALE,
        translation_placeholders={"count": str(len(found)), **placeholders},
        data={"entry_id": entry_id, "kind": ISSUE_STALE},
    )


# -- packages the console no longer serves ------------------------------------------------------


def package_issue_id(entry_id: str, file_id: str) -> str:
    """Return the id of the issue of a registered package the console no longer serves."""
    return f"{ISSUE_PACKAGE}_{entry_id}_{file_id}"


class PackageWatch:
    """Checks that the console still serves the registered packages, and says when it does not.

    A check downloads the package with a device's credentials, as a device would. Only a clear
    "no such package" raises the issue: a console that does not answer proves nothing.
    """

    def __init__(self, hass: HomeAssistant, entry: InsighioOtaConfigEntry) -> None:
        """Watch the packages of a loaded entry; call `async_start`."""
        self._hass = hass
        self._entry = entry
        self._issues: set[str] = set()

    @property
    def _runtime(self) -> InsighioOtaRuntimeData:
        return self._entry.runtime_data

    @callback
    def async_start(self) -> Callable[[], None]:
        """Check daily and after a device gave up downloading; returns the function to stop."""
        stops = [
            async_track_time_interval(self._hass, self._on_timer, PACKAGE_CHECK_INTERVAL),
            self._runtime.tracker.async_add_job_listener(self._on_job),
            self._runtime.catalogue.async_add_listener(self._on_catalogue),
        ]

        @callback
        def _stop() -> None:
            for stop in stops:
                stop()

        return _stop

    @callback
    def _on_timer(self, _now: datetime) -> None:
        self._entry.async_create_background_task(
            self._hass, self.async_check(), "insighio_ota package check"
        )

    @callback
    def _on_job(self, job: OtaJob) -> None:
        """Check a package a device gave up downloading: the console may have lost it."""
        if job.state != "failed" or not (job.reason or "").startswith("can not download"):
            return
        package = self._runtime.catalogue.by_file_id(job.file_id)
        if package is not None:
            self._entry.async_create_background_task(
                self._hass, self.async_check([package]), "insighio_ota package check"
            )

    @callback
    def _on_catalogue(self) -> None:
        """Drop the issues of packages removed from HA."""
        known = {
            package_issue_id(self._entry.entry_id, package.file_id)
            for package in self._runtime.catalogue.packages
        }
        for issue_id in self._issues - known:
            ir.async_delete_issue(self._hass, DOMAIN, issue_id)
        self._issues &= known

    async def async_check(self, packages: Iterable[Package] | None = None) -> None:
        """Download each package (every registered one by default); raise or clear its issue."""
        runtime = self._runtime
        devices = list(runtime.coordinator.data.values())
        # An MQTT-only entry has no console to ask (and no device key to ask with).
        if runtime.client is None or not devices:
            return
        for package in list(runtime.catalogue.packages if packages is None else packages):
            issue_id = package_issue_id(self._entry.entry_id, package.file_id)
            try:
                await runtime.client.download_package(package.file_id, devices[0])
            except PackageNotFoundError:
                self._issues.add(issue_id)
                ir.async_create_issue(
                    self._hass,
                    DOMAIN,
                    issue_id,
                    is_fixable=True,
                    is_persistent=False,
                    severity=ir.IssueSeverity.WARNING,
                    translation_key=ISSUE_PACKAGE,
                    translation_placeholders={
                        "version": package.version,
                        "file_id": package.file_id,
                    },
                    data={
                        "entry_id": self._entry.entry_id,
                        "kind": ISSUE_PACKAGE,
                        "file_id": package.file_id,
                    },
                )
            except ConsoleError as err:
                LOGGER.debug("Could not check package %s: %s", package.file_id, err)
            else:
                self._issues.discard(issue_id)
                ir.async_delete_issue(self._hass, DOMAIN, issue_id)

    @callback
    def async_unload(self) -> None:
        """Drop the entry's package issues: they are checked again when it loads."""
        for issue_id in self._issues:
            ir.async_delete_issue(self._hass, DOMAIN, issue_id)
        self._issues.clear()


# -- fix flows ----------------------------------------------------------------------------------


class InsighioOtaRepairFlow(ConfirmRepairFlow):
    """Confirm (the issue's text says what happens), then fix it on the loaded config entry.

    Stale requests are cleared with empty retained publishes; a package the console lost is
    forgotten.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        """Remember the issue's data: which entry, which kind, which package."""
        super().__init__()
        self._issue_data = dict(data)

    async def async_step_confirm(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """Act once the user confirmed; the flow manager then deletes the issue."""
        if user_input is None:
            return await super().async_step_confirm()
        entry = self.hass.config_entries.async_get_entry(str(self._issue_data.get("entry_id")))
        if entry is None or entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        runtime: InsighioOtaRuntimeData = entry.runtime_data
        if self._issue_data.get("kind") == ISSUE_PACKAGE:
            file_id = str(self._issue_data.get("file_id"))
            if runtime.catalogue.by_file_id(file_id) is not None:
                await runtime.catalogue.async_remove(file_id)
            return self.async_create_entry(data={})
        try:
            await runtime.tracker.async_clear_stale_requests()
        except HomeAssistantError as err:
            LOGGER.warning("Could not clear the stale OTA requests: %s", err)
            return self.async_abort(reason="publish_failed")
        return self.async_create_entry(data={})


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """Return the fix flow of one of our fixable issues."""
    return InsighioOtaRepairFlow(data or {})
