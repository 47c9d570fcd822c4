"""Diagnostics of a config entry: devices, packages and OTA jobs, without any secret."""

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_EMAIL
from homeassistant.core import HomeAssistant

from .const import CONF_API_KEY, CONF_API_KEY_ID
from .coordinator import InsighioOtaConfigEntry

# Device keys are MQTT passwords and download credentials; the API key opens the account; the
# cellular identifiers and serials identify a person's hardware.
TO_REDACT = {
    CONF_API_KEY,
    CONF_API_KEY_ID,
    CONF_EMAIL,
    "key",
    "serial",
    "cell_imei",
    "cell_imsi",
    "cell_iccid",
}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: InsighioOtaConfigEntry
) -> dict[str, Any]:
    """Return what helps to understand a stuck or failed update."""
    runtime = entry.runtime_data
    tracker = runtime.tracker
    devices = {
        device_id: {
            "name": device.name,
            "control_channel": device.control_channel,
            "installed_version": tracker.installed_version(device_id),
            "stat": asdict(stat) if (stat := tracker.stat(device_id)) else None,
            "job": job.as_dict() if (job := tracker.job(device_id)) else None,
            "history": tracker.history(device_id),
            "wake_interval_s": (
                interval.total_seconds()
                if (facts := tracker.facts(device_id)) and (interval := facts.wake_interval)
                else None
            ),
        }
        for device_id, device in runtime.coordinator.data.items()
    }
    return async_redact_data(
        {
            "entry": {"data": dict(entry.data), "title": "**REDACTED**"},
            "devices": devices,
            "packages": [package.as_dict() for package in runtime.catalogue.packages],
            "options": dict(entry.options),
        },
        TO_REDACT,
    )
