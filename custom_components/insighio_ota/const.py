"""Constants of the insigh.io OTA integration."""

from datetime import timedelta
import logging
from typing import Final

DOMAIN: Final = "insighio_ota"
LOGGER = logging.getLogger(__package__)

CONF_CONSOLE_URL: Final = "console_url"
CONF_API_KEY: Final = "api_key"
CONF_API_KEY_ID: Final = "api_key_id"

# The console's device list changes rarely (someone adds a device in the console), so a slow
# poll is enough; everything that happens during an OTA arrives over MQTT instead.
DEVICE_LIST_INTERVAL: Final = timedelta(minutes=15)
# A revocable key for HA only; the user can revoke it in the console at any time.
API_KEY_NAME: Final = "Home Assistant insighio_ota"
API_KEY_DURATION: Final = timedelta(days=3650)

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

MANUFACTURER: Final = "insigh.io"
