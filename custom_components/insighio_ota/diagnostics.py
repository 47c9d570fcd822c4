"""Diagnostics of a config entry: devices, packages and OTA jobs, without any secret."""

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_EMAIL
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceEntry

from .const import CONF_API_KEY, CONF_API_KEY_ID, DOMAIN
from .coordinator import InsighioOtaConfigEntry, is_mqtt_only

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
# An MQTT-only entry names its devices after their serials.
TO_REDACT_MQTT_ONLY = {*TO_REDACT, "name"}


def _to_redact(entry: InsighioOtaConfigEntry) -> set[str]:
    return TO_REDACT_MQTT_ONLY if is_mqtt_only(entry) else TO_REDACT


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: InsighioOtaConfigEntry
) -> dict[str, Any]:
    """Return what helps to understand a stuck or failed update."""
    runtime = entry.runtime_data
    devices = {
        device_id: _device_diagnostics(entry, device_id) for device_id in runtime.coordinator.data
    }
    return async_redact_data(
        {
            "entry": {"data": dict(entry.data), "title": "**REDACTED**"},
            "devices": devices,
            "packages": [package.as_dict() for package in runtime.catalogue.packages],
            "options": dict(entry.options),
        },
        _to_redact(entry),
    )


async def async_get_device_diagnostics(
    hass: HomeAssistant, entry: InsighioOtaConfigEntry, device: DeviceEntry
) -> dict[str, Any]:
    """Return one device's software, job, history and learned cadence, without secrets."""
    device_ids = [identifier for domain, identifier in device.identifiers if domain == DOMAIN]
    return async_redact_data(
        {
            device_id: _device_diagnostics(entry, device_id)
            for device_id in device_ids
            if device_id in entry.runtime_data.coordinator.data
        },
        _to_redact(entry),
    )


def _device_diagnostics(entry: InsighioOtaConfigEntry, device_id: str) -> dict[str, Any]:
    """Return what the tracker knows of one console device (not yet redacted)."""
    tracker = entry.runtime_data.tracker
    device = entry.runtime_data.coordinator.data[device_id]
    facts = tracker.facts(device_id)
    interval = facts.wake_interval if facts else None
    return {
        "name": device.name,
        "control_channel": device.control_channel,
        "installed_version": tracker.installed_version(device_id),
        "stat": asdict(stat) if (stat := tracker.stat(device_id)) else None,
        "job": job.as_dict() if (job := tracker.job(device_id)) else None,
        "history": tracker.history(device_id),
        "wake_interval_s": interval.total_seconds() if interval else None,
    }
