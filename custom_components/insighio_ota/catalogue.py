"""The packages Home Assistant knows about, in the order they were registered.

The console has no API to list packages, so a package becomes known to HA when the user registers
its file id. In console mode it is then downloaded once with one device's credentials, which proves
the id exists and gives the exact size the firmware needs in the request (cellular devices refuse
any other size) and a sha256 for the record.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .const import DOMAIN

STORAGE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Package:
    """A console package registered in HA."""

    file_id: str
    file_type: str
    size: int
    sha256: str
    version: str
    release_notes: str | None
    registered_at: str
    # The application commit the package installs, when known: /stat can then verify it.
    sw_commit: str | None = None


class VersionTakenError(Exception):
    """Raised when a version label already belongs to another package."""

    def __init__(self, version: str, file_id: str) -> None:
        """Name the label and the package that has it."""
        super().__init__(f"version {version} belongs to package {file_id}")
        self.version = version
        self.file_id = file_id


class PackageCatalogue:
    """The registered packages of one config entry, persisted in HA's storage."""

    def __init__(self, hass: HomeAssistant, entry_id: str) -> None:
        """Prepare the catalogue; call `async_load` before use."""
        self._store: Store[dict[str, list[dict[str, Any]]]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.packages"
        )
        self._packages: list[Package] = []
        self._listeners: list[CALLBACK_TYPE] = []

    async def async_load(self) -> None:
        """Read the registered packages from storage."""
        stored = await self._store.async_load()
        if stored:
            self._packages = [Package(**package) for package in stored["packages"]]

    @property
    def packages(self) -> list[Package]:
        """Return the packages, oldest registration first."""
        return list(self._packages)

    @property
    def latest(self) -> Package | None:
        """Return the newest package: the last one registered, never a string comparison."""
        return self._packages[-1] if self._packages else None

    def by_version(self, version: str) -> Package | None:
        """Return the package with this version label."""
        return next((p for p in self._packages if p.version == version), None)

    def by_file_id(self, file_id: str) -> Package | None:
        """Return the package with this console file id."""
        return next((p for p in self._packages if p.file_id == file_id), None)

    def order_of(self, version: str) -> int | None:
        """Return the registration position of a version label, None when unknown."""
        return next((index for index, p in enumerate(self._packages) if p.version == version), None)

    def check_version_free(self, file_id: str, version: str) -> None:
        """Raise `VersionTakenError` when another package already has this label."""
        existing = self.by_version(version)
        if existing is not None and existing.file_id != file_id:
            raise VersionTakenError(version, existing.file_id)

    async def async_add(
        self,
        *,
        file_id: str,
        file_type: str,
        size: int,
        sha256: str,
        version: str,
        release_notes: str | None,
    ) -> Package:
        """Store a verified package and tell the entities.

        Registering a file id again replaces its record in place (a corrected label or notes)
        and keeps its position, so the order of versions does not silently change.
        """
        # Checked again here: another registration may have taken the label during a download.
        self.check_version_free(file_id, version)
        package = Package(
            file_id=file_id,
            file_type=file_type,
            size=size,
            sha256=sha256,
            version=version,
            release_notes=release_notes,
            registered_at=dt_util.utcnow().isoformat(),
        )
        existing = self.by_file_id(file_id)
        if existing is not None:
            self._packages[self._packages.index(existing)] = package
        else:
            self._packages.append(package)
        await self._store.async_save({"packages": [asdict(p) for p in self._packages]})
        for listener in list(self._listeners):
            listener()
        return package

    @callback
    def async_add_listener(self, listener: CALLBACK_TYPE) -> Callable[[], None]:
        """Call `listener` whenever the catalogue changes; returns the function to stop."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
