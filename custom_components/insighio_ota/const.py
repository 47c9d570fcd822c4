"""Constants of the insigh.io OTA integration."""

from datetime import timedelta
import logging
from typing import Final

DOMAIN: Final = "insighio_ota"
LOGGER = logging.getLogger(__package__)

CONF_CONSOLE_URL: Final = "console_url"
CONF_API_KEY: Final = "api_key"
CONF_API_KEY_ID: Final = "api_key_id"
# An entry is either a console account (the default, also for entries made before MQTT-only mode
# existed, which have no `mode`) or one console project followed over MQTT only.
CONF_MODE: Final = "mode"
MODE_CONSOLE: Final = "console"
MODE_MQTT: Final = "mqtt"
CONF_DATA_CHANNEL: Final = "data_channel"
CONF_CONTROL_CHANNEL: Final = "control_channel"
# An MQTT-only entry adds a device whenever a new id talks on the project's channels; anyone who
# can publish there could invent ids, so the list has a ceiling.
MAX_DISCOVERED_DEVICES: Final = 5000

# The console's device list changes rarely (someone adds a device in the console), so a slow
# poll is enough; everything that happens during an OTA arrives over MQTT instead.
DEVICE_LIST_INTERVAL: Final = timedelta(minutes=15)
# A revocable key for HA only; the user can revoke it in the console at any time.
API_KEY_NAME: Final = "Home Assistant insighio_ota"
API_KEY_DURATION: Final = timedelta(days=3650)

# Home Assistant holds at most 10,000 enabled entities per config entry and quietly drops the
# rest. Each device has three (update, OTA status, OTA result); above this many devices the last
# two are added disabled, so that every device keeps its update entity (up to about 8,000 devices
# even if the fleet grew past this size after the first devices got all three).
LARGE_FLEET_DEVICES: Final = 1_000

# After an applied report the device reboots and sends /stat within about a minute; this is how
# long the entity keeps showing progress while it waits for that confirmation.
VERIFY_WINDOW: Final = timedelta(minutes=30)

EVENT_OTA_STATUS: Final = "insighio_ota_status"

ATTR_FILE_ID: Final = "file_id"
ATTR_FILE_TYPE: Final = "file_type"
ATTR_VERSION: Final = "version"
ATTR_RELEASE_NOTES: Final = "release_notes"
ATTR_CONFIG_ENTRY_ID: Final = "config_entry_id"
ATTR_STATE: Final = "state"
ATTR_REASON: Final = "reason"
ATTR_INSIGHIO_DEVICE_ID: Final = "insighio_device_id"

SERVICE_REGISTER_PACKAGE: Final = "register_package"
SERVICE_CANCEL: Final = "cancel"

MANUFACTURER: Final = "insigh.io"

# Options of a config entry (the options flow sets them; these are the defaults).
CONF_NOTIFY_FAILURES: Final = "notify_failures"
CONF_RETRY_CAP: Final = "retry_cap"
CONF_TIMEOUT_WAKES: Final = "timeout_wakes"
CONF_SEEN_WITHIN_HOURS: Final = "seen_within_hours"
CONF_MIN_BATTERY_MV: Final = "min_battery_mv"
DEFAULT_NOTIFY_FAILURES: Final = True
# The firmware retries "can not download" at every wake forever; we give up after this many.
DEFAULT_RETRY_CAP: Final = 3
# A queued job times out after this many of the device's wake intervals...
DEFAULT_TIMEOUT_WAKES: Final = 6
# ...but never sooner or later than these, and after a day when the cadence is unknown.
MIN_QUEUED_TIMEOUT: Final = timedelta(hours=1)
MAX_QUEUED_TIMEOUT: Final = timedelta(days=7)
UNKNOWN_CADENCE_TIMEOUT: Final = timedelta(hours=24)
# 0 turns a guard off. A device not heard from for this long probably will not wake soon.
DEFAULT_SEEN_WITHIN_HOURS: Final = 72
DEFAULT_MIN_BATTERY_MV: Final = 0
# Jobs kept per device for diagnostics.
JOB_HISTORY_LENGTH: Final = 20

# Maintenance window (local time, "HH:MM"; both empty = none): OTA requests asked outside it are
# held by HA and published when it opens.
CONF_WINDOW_START: Final = "maintenance_start"
CONF_WINDOW_END: Final = "maintenance_end"
