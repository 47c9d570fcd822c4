"""The packages Home Assistant knows about, in registration order (or the order the user chose).

The console has no API to list packages, so a package becomes known to HA when the user registers
its file id. In console mode it is then downloaded once with one device's credentials, which proves
the id exists, gives the exact size the firmware needs in the request (cellular devices refuse any
other size) and a sha256 for the record, and lets `package.check_package` refuse what the firmware
cannot apply. An MQTT-only entry has no device key to download with: the user gives the type and
size, and the package has no sha256.

Order is the list order: a new package goes last, a re-registration keeps its place, and only an
explicit move changes it. Labels are never compared as strings.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .const import DOMAIN

# 2: packages gained `hardware` and `sw_commit`.
STORAGE_VERSION = 2

# The `hw_version` values the firmware reports on /stat.
HARDWARE_FAMILIES: Final = ("esp32", "esp32wroom", "esp32s2", "esp32s3", "esp8266", "other")
# Git short hashes vary in length; a shorter one matches a longer one it begins, down to this.
MIN_COMMIT_PREFIX = 7

_EDITABLE = frozenset({"version", "release_notes", "hardware", "sw_commit"})


@dataclass(frozen=True, slots=True)
class Package:
    """A console package registered in HA."""

    file_id: str
    file_type: str
    size: int
    # None when nothing was downloaded (an MQTT-only entry).
    sha256: str | None
    version: str
    release_notes: str | None
    registered_at: str
    # The hw_version families it is for; empty means every device.
    hardware: tuple[str, ...] = ()
    # The application commit a device reports on /stat once it has applied the package.
    sw_commit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the package as JSON-ready data (storage, diagnostics, action responses)."""
        return {
            "file_id": self.file_id,
            "file_type": self.file_type,
            "size": self.size,
            "sha256": self.sha256,
            "version": self.version,
            "release_notes": self.release_notes,
            "registered_at": self.registered_at,
            "hardware": list(self.hardware),
            "sw_commit": self.sw_commit,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Package:
        """Read a stored package; fields of older versions get their defaults, unknown go."""
        return cls(
            file_id=data["file_id"],
            file_type=data["file_type"],
            size=data["size"],
            sha256=data.get("sha256") or None,
            version=data["version"],
            release_notes=data.get("release_notes"),
            registered_at=data.get("registered_at", ""),
            hardware=normalize_hardware(data.get("hardware") or ()),
            sw_commit=data.get("sw_commit") or None,
        )


def normalize_hardware(hardware: Iterable[str]) -> tuple[str, ...]:
    """Return hardware families lower-cased, without blanks or repeats, in the given order."""
    return tuple(dict.fromkeys(h.strip().lower() for h in hardware if h.strip()))


def same_commit(first: str, second: str) -> bool:
    """Return True when two commit ids name the same commit (full or abbreviated)."""
    first, second = first.strip().lower(), second.strip().lower()
    if not first or not second:
        return False
    if first == second:
        return True
    shorter, longer = sorted((first, second), key=len)
    return len(shorter) >= MIN_COMMIT_PREFIX and longer.startswith(shorter)


class VersionTakenError(Exception):
    """Raised when a version label already belongs to another package."""

    def __init__(self, version: str, file_id: str) -> None:
        """Name the label and the package that has it."""
        super().__init__(f"version {version} belongs to package {file_id}")
        self.version = version
        self.file_id = file_id


class PackageRegisteredError(Exception):
    """Raised when the file id is registered already (it is changed, not registered again)."""

    def __init__(self, file_id: str, version: str) -> None:
        """Name the package and the label it has."""
        super().__init__(f"package {file_id} is registered already as {version}")
        self.file_id = file_id
        self.version = version


class UnknownPackageError(KeyError):
    """Raised when no registered package has the file id."""

    def __init__(self, file_id: str) -> None:
        """Name the file id."""
        super().__init__(file_id)
        self.file_id = file_id


class _PackageStore(Store[dict[str, list[dict[str, Any]]]]):
    """The catalogue's storage; migrates records of older versions."""

    async def _async_migrate_func(
        self, old_major_version: int, old_minor_version: int, old_data: dict[str, Any]
    ) -> dict[str, list[dict[str, Any]]]:
        """Give version 1 records the fields added since; `from_dict` keeps them tolerant."""
        return {"packages": [Package.from_dict(p).as_dict() for p in old_data["packages"]]}


class PackageCatalogue:
    """The registered packages of one config entry, persisted in HA's storage."""

    def __init__(self, hass: HomeAssistant, entry_id: str) -> None:
        """Prepare the catalogue; call `async_load` before use."""
        self._store = _PackageStore(hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.packages")
        self._packages: list[Package] = []
        self._listeners: list[CALLBACK_TYPE] = []

    async def async_load(self) -> None:
        """Read the registered packages from storage."""
        stored = await self._store.async_load()
        if stored:
            self._packages = [Package.from_dict(package) for package in stored["packages"]]

    @property
    def packages(self) -> list[Package]:
        """Return the packages in order, oldest first."""
        return list(self._packages)

    @property
    def latest(self) -> Package | None:
        """Return the newest package of all hardware: the last in order."""
        return self._packages[-1] if self._packages else None

    @staticmethod
    def compatible(package: Package, hw_version: str | None) -> bool:
        """Return True when the package is for this hardware family.

        A package for all hardware suits every device; one for named families suits only a
        device known to be one of them, so a device whose family is unknown sees only the former.
        """
        if not package.hardware:
            return True
        return hw_version is not None and hw_version.strip().lower() in package.hardware

    def latest_for(self, hw_version: str | None) -> Package | None:
        """Return the newest package compatible with the hardware family."""
        return next((p for p in reversed(self._packages) if self.compatible(p, hw_version)), None)

    def by_version(self, version: str) -> Package | None:
        """Return the package with this version label."""
        return next((p for p in self._packages if p.version == version), None)

    def by_file_id(self, file_id: str) -> Package | None:
        """Return the package with this console file id."""
        return next((p for p in self._packages if p.file_id == file_id), None)

    def by_sw_commit(self, commit: str | None) -> Package | None:
        """Return the newest package that installs this application commit."""
        if not commit:
            return None
        return next(
            (
                p
                for p in reversed(self._packages)
                if p.sw_commit is not None and same_commit(p.sw_commit, commit)
            ),
            None,
        )

    def order_of(self, version: str) -> int | None:
        """Return the position (0 = oldest) of a version label, None when unknown."""
        return next((index for index, p in enumerate(self._packages) if p.version == version), None)

    def position_of(self, file_id: str) -> int:
        """Return the position (0 = oldest) of a file id; raise `UnknownPackageError`."""
        return self._packages.index(self._get(file_id))

    def check_version_free(self, file_id: str, version: str) -> None:
        """Raise `VersionTakenError` when another package already has this label."""
        existing = self.by_version(version)
        if existing is not None and existing.file_id != file_id:
            raise VersionTakenError(version, existing.file_id)

    def check_file_id_free(self, file_id: str) -> None:
        """Raise `PackageRegisteredError` when a package has this file id already.

        Registering it again would silently drop what the user set on it (hardware, commit,
        position); `async_update` changes a package instead.
        """
        if (existing := self.by_file_id(file_id)) is not None:
            raise PackageRegisteredError(file_id, existing.version)

    async def async_add(
        self,
        *,
        file_id: str,
        file_type: str,
        size: int,
        sha256: str | None,
        version: str,
        release_notes: str | None,
        hardware: Iterable[str] = (),
        sw_commit: str | None = None,
    ) -> Package:
        """Store a new package (downloaded, or as the user described it) and tell the entities.

        Raises `PackageRegisteredError` for a file id registered already, `VersionTakenError`
        for a label another package has.
        """
        # Checked again here: another registration may have taken either during a download.
        self.check_file_id_free(file_id)
        self.check_version_free(file_id, version)
        package = Package(
            file_id=file_id,
            file_type=file_type,
            size=size,
            sha256=sha256,
            version=version,
            release_notes=release_notes or None,
            registered_at=dt_util.utcnow().isoformat(),
            hardware=normalize_hardware(hardware),
            sw_commit=(sw_commit or "").strip() or None,
        )
        self._packages.append(package)
        await self._async_changed()
        return package

    async def async_update(self, file_id: str, **changes: Any) -> Package:
        """Change a package's label, notes, hardware or commit, and its position if given.

        `position` is 0-based like `order_of`; empty notes or commit clear them, an empty
        hardware list makes the package one for all hardware.
        """
        package = self._get(file_id)
        position = changes.pop("position", None)
        if unknown := changes.keys() - _EDITABLE:
            raise TypeError(f"cannot change {', '.join(sorted(unknown))} of a package")
        if "version" in changes:
            self.check_version_free(file_id, changes["version"])
        if "hardware" in changes:
            changes["hardware"] = normalize_hardware(changes["hardware"] or ())
        for field in ("release_notes", "sw_commit"):
            if field in changes:
                changes[field] = (changes[field] or "").strip() or None
        updated = replace(package, **changes)
        index = self._packages.index(package)
        self._packages[index] = updated
        if position is not None:
            self._move(index, position)
        await self._async_changed()
        return updated

    async def async_remove(self, file_id: str) -> Package:
        """Forget a package; raise `UnknownPackageError` when there is none with this id."""
        package = self._get(file_id)
        self._packages.remove(package)
        await self._async_changed()
        return package

    async def async_move(self, file_id: str, position: int) -> Package:
        """Put a package at a position (0 = oldest, clamped), which makes it newer or older."""
        package = self._get(file_id)
        self._move(self._packages.index(package), position)
        await self._async_changed()
        return package

    @callback
    def async_add_listener(self, listener: CALLBACK_TYPE) -> Callable[[], None]:
        """Call `listener` whenever the catalogue changes; returns the function to stop."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _get(self, file_id: str) -> Package:
        package = self.by_file_id(file_id)
        if package is None:
            raise UnknownPackageError(file_id)
        return package

    def _move(self, index: int, position: int) -> None:
        package = self._packages.pop(index)
        self._packages.insert(max(0, min(position, len(self._packages))), package)

    async def _async_changed(self) -> None:
        await self._store.async_save({"packages": [p.as_dict() for p in self._packages]})
        for listener in list(self._listeners):
            listener()
