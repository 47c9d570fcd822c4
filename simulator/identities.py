"""Deterministic identities for the simulated project and its devices.

The console stand-in and the simulated devices may run in different processes (``console`` and
``devices`` sub-commands). Deriving every identifier from a seed and a device index lets both
sides agree without sharing any state, and makes a restarted simulator present the same devices.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import uuid

# A fixed namespace keeps the derived UUIDs stable across releases of this package; changing it
# would silently give every demo installation new devices.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://insigh.io/insighio-ota/simulator")

# The firmware reports these hardware versions; the simulator cycles through three common ones so
# that a demo shows a mixed fleet.
HW_VERSIONS: tuple[str, ...] = ("esp32s3", "esp32", "esp32wroom")

# Espressif's OUI makes the simulated serials look like the Wi-Fi MACs real devices report.
_ESPRESSIF_OUI = "240ac4"

DEFAULT_SEED = "insighio-demo"
INITIAL_SW_BRANCH = "master"
INITIAL_SW_COMMIT = "1a2b3c4"


def _uuid(seed: str, *parts: object) -> str:
    """Return a UUID derived from the seed and the given parts."""
    name = "/".join([seed, *(str(part) for part in parts)])
    return str(uuid.uuid5(_NAMESPACE, name))


@dataclass(frozen=True, slots=True)
class ProjectIdentity:
    """The console project: one data channel and one control channel shared by all devices."""

    data_channel: str
    control_channel: str


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Everything that identifies one device, as the console and the firmware know it."""

    index: int
    id: str
    key: str
    name: str
    serial: str
    hw_version: str

    def __repr__(self) -> str:
        """Hide the key, because the key is the device's password and must never be logged."""
        return (
            f"DeviceIdentity(index={self.index}, id={self.id!r}, name={self.name!r}, "
            f"serial={self.serial!r}, hw_version={self.hw_version!r})"
        )


def project_identity(seed: str = DEFAULT_SEED) -> ProjectIdentity:
    """Return the project's channels for the given seed."""
    return ProjectIdentity(
        data_channel=_uuid(seed, "channel", "data"),
        control_channel=_uuid(seed, "channel", "control"),
    )


def device_identity(index: int, seed: str = DEFAULT_SEED) -> DeviceIdentity:
    """Return the identity of the device with the given zero-based index."""
    digest = hashlib.sha256(f"{seed}/device/{index}/serial".encode()).hexdigest()
    return DeviceIdentity(
        index=index,
        id=_uuid(seed, "device", index, "id"),
        key=_uuid(seed, "device", index, "key"),
        name=f"Sensor {index + 1}",
        serial=_ESPRESSIF_OUI + digest[:6],
        hw_version=HW_VERSIONS[index % len(HW_VERSIONS)],
    )


def device_identities(count: int, seed: str = DEFAULT_SEED) -> list[DeviceIdentity]:
    """Return the identities of the first ``count`` devices."""
    return [device_identity(index, seed) for index in range(count)]
