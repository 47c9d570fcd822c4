"""Diagnostics show devices, packages and jobs, and never a secret."""

import json

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
    get_diagnostics_for_device,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.insighio_ota.const import DOMAIN

from .conftest import API_KEY, DEVICE_ID, DEVICE_KEY, PACKAGE_ID, stat_payload, stat_topic


async def test_diagnostics_redact_secrets(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    setup_integration: MockConfigEntry,
) -> None:
    """Device keys, the API key, the email, serials and cellular ids are redacted."""
    assert await async_setup_component(hass, "diagnostics", {})
    async_fire_mqtt_message(
        hass,
        stat_topic(),
        stat_payload(cell_imei="356938035643809", cell_iccid="8944500102198304826"),
    )
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": PACKAGE_ID, "version": "1.1.0"},
        blocking=True,
    )
    await hass.services.async_call(
        "update", "install", {"entity_id": "update.sensor_1_firmware"}, blocking=True
    )

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, setup_integration)

    text = json.dumps(diagnostics)
    for secret in (API_KEY, DEVICE_KEY, "user@example.test", "356938035643809", "240ac4542f45"):
        assert secret not in text
    device = diagnostics["devices"][DEVICE_ID]
    assert device["installed_version"] == "master@1a2b3c4"
    assert device["job"]["state"] == "queued"
    assert device["job"]["file_id"] == PACKAGE_ID
    assert diagnostics["packages"][0]["version"] == "1.1.0"
    assert [job["state"] for job in device["history"]] == ["queued"]


async def test_device_diagnostics_redact_secrets(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    setup_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """One device's diagnostics: its software and job, and no key, serial or cellular id."""
    assert await async_setup_component(hass, "diagnostics", {})
    async_fire_mqtt_message(hass, stat_topic(), stat_payload(cell_iccid="8944500102198304826"))
    await hass.async_block_till_done()
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, DEVICE_ID), setup_integration.entry_id
    )
    assert device is not None

    diagnostics = await get_diagnostics_for_device(hass, hass_client, setup_integration, device)

    text = json.dumps(diagnostics)
    for secret in (DEVICE_KEY, "8944500102198304826", "240ac4542f45"):
        assert secret not in text
    assert diagnostics[DEVICE_ID]["installed_version"] == "master@1a2b3c4"
    assert diagnostics[DEVICE_ID]["job"] is None
