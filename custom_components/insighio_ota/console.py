"""Client of the insigh.io console REST API.

The console is a Mainflux deployment behind a reverse proxy mounted at ``/mf-rproxy``. This
module only speaks HTTP: it imports nothing from Home Assistant so that it can be read, tested
and reused on its own. The caller injects the ``aiohttp.ClientSession`` (Home Assistant's shared
session in the integration) and this module never closes it.

Secret hygiene is the main design constraint here. The console hands out login tokens, API keys
and device keys, and the package download endpoint takes the device key in its query string.
aiohttp embeds the request URL in the text of many of its exceptions, so every failure is
translated into one of the errors below with a message that names only the operation and the
HTTP status, and it is raised outside of the ``except`` block that caught the original error:
that way neither ``__cause__`` nor ``__context__`` keeps the aiohttp exception (and its URL)
alive. Nothing in this module logs a URL, a token, a key or a password.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
import hashlib
from http import HTTPStatus
import json
import logging
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

_LOGGER = logging.getLogger(__name__)

DEFAULT_CONSOLE_URL: Final = "https://console.insigh.io"
API_PATH: Final = "/mf-rproxy"

# Mainflux key type 3 is an "API key": long lived and revocable from the console, which is what
# Home Assistant should store instead of the user's password.
_API_KEY_TYPE: Final = 3

# A JSON call answers with a few kilobytes: a console that takes longer than this is down or
# hanging, and Home Assistant's setup (which waits for the device list) must not wait for it.
# A package download may be up to a few megabytes over a slow link, so it gets longer.
API_TIMEOUT: Final = 10.0
DOWNLOAD_TIMEOUT: Final = 60.0

# Answers and packages are read in chunks of this size (see `_read_capped`).
_READ_CHUNK_SIZE: Final = 64 * 1024

# The device list of 10,000 devices is about 20 MB of JSON (each device carries its metadata);
# an answer larger than this is no console's, and reading it whole would cost Home Assistant
# that much memory, so it is refused while reading.
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024

# Go serialises an unset ``time.Time`` as its zero value rather than omitting it, so a key
# without expiry may come back with this instant as its ``expires_at``.
_GO_ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)

# 401 and 403 both mean "these credentials are not accepted": Mainflux answers 401 for a bad or
# expired token and the download proxy answers 403 for a device key that does not match.
_AUTH_STATUSES: Final = frozenset({HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN})


class ConsoleError(Exception):
    """Base class of every error raised by the console client.

    ``status`` is the HTTP status when the console answered, and ``None`` when it did not
    (unreachable, timeout) or when the failure is not tied to a status (for example a body of
    the wrong shape). Messages never contain URLs, tokens, keys or passwords.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        """Store the message and the optional HTTP status."""
        super().__init__(message)
        self.status = status


class ConsoleAuthenticationError(ConsoleError):
    """The console rejected the credentials (HTTP 401 or 403), or no token was configured."""


class ConsoleConnectionError(ConsoleError):
    """The console could not be reached or failed on its side (network, timeout, TLS, 5xx, 429).

    These failures are transient: the caller should retry later rather than ask the user for
    new credentials.
    """


class ConsoleResponseError(ConsoleError):
    """The console answered with an unexpected status or with a body of an unexpected shape."""


class PackageNotFoundError(ConsoleError):
    """The download endpoint does not know the requested file id (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class ConsoleDevice:
    """A device from the console's device list, with what an OTA update needs.

    ``key`` is the device's secret (its MQTT password and download credential) and is kept out
    of ``repr`` so that logging a device never leaks it. ``metadata`` is the console's raw
    metadata object, read-only; it is left out of ``repr`` because its content is not under our
    control, and out of ``hash`` because a mapping is not hashable.
    """

    device_id: str
    name: str
    key: str = field(repr=False)
    data_channel: str
    control_channel: str
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A console API key; ``value`` is the token to send and is kept out of ``repr``.

    ``expires_at`` is timezone-aware (UTC) or ``None`` when the key does not expire.
    """

    key_id: str
    value: str = field(repr=False)
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class PackageDownload:
    """A downloaded package: its size in bytes, its SHA-256 (lower-case hex) and its content."""

    size: int
    sha256: str
    content: bytes = field(repr=False)


def normalize_console_url(url: str) -> str:
    """Return the console base URL in canonical form, or raise ``ValueError``.

    Surrounding whitespace and trailing slashes are removed, the scheme must be http or https
    and a host is required. A trailing ``/mf-rproxy`` is removed too, because users often copy
    the API address instead of the console address and the client appends that path itself.
    Credentials, queries and fragments are refused: the base URL is stored in the config entry
    and may be shown in diagnostics, so it must not carry secrets, and anything after the path
    would break the URLs built from it.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("console URL must start with http:// or https://")
    # Reading ``port`` validates it; urlsplit raises ValueError for a malformed one.
    if not parts.hostname or parts.port == 0:
        raise ValueError("console URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("console URL must not contain credentials")
    if parts.query or parts.fragment:
        raise ValueError("console URL must not contain a query or a fragment")
    path = parts.path.rstrip("/")
    if path.endswith(API_PATH):
        path = path.removesuffix(API_PATH).rstrip("/")
    return f"{scheme}://{parts.netloc.lower()}{path}"


def _parse_timestamp(value: object) -> datetime | None:
    """Parse a Mainflux timestamp into an aware UTC datetime, ``None`` for "no expiry".

    Mainflux writes RFC 3339 timestamps with up to nine fractional digits (Go's nanoseconds)
    and a ``Z`` suffix; ``datetime.fromisoformat`` accepts both since Python 3.11 and drops the
    digits beyond microseconds. A timestamp without offset is taken as UTC, which is what the
    console uses everywhere.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConsoleResponseError("create API key: expires_at is not a string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    # Raised here, outside the except block, so the parse error is not chained to ours.
    if parsed is None:
        raise ConsoleResponseError("create API key: expires_at is not an ISO 8601 timestamp")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if parsed == _GO_ZERO_TIME:
        return None
    return parsed


def _non_empty_str(value: object) -> str | None:
    """Return ``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


class ConsoleClient:
    """Asynchronous client of the insigh.io console REST API.

    The session is injected and shared: the client never closes it. ``token`` is the API key
    (or a login token) used by :meth:`list_devices`; :meth:`login` and :meth:`create_api_key`
    do not need it, and :meth:`download_package` authenticates with the device's own
    credentials instead.

    Redirects are never followed. A redirect could carry a token or a device key to another
    host, and the firmware does not follow them either, so a console that redirects downloads
    would not work for devices anyway.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str = DEFAULT_CONSOLE_URL,
        *,
        token: str | None = None,
        request_timeout: float = API_TIMEOUT,
        download_timeout: float = DOWNLOAD_TIMEOUT,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        """Create a client; raises ``ValueError`` for an invalid URL or timeout."""
        if request_timeout <= 0 or download_timeout <= 0:
            raise ValueError("request_timeout and download_timeout must be positive")
        self._session = session
        self._base_url = normalize_console_url(base_url)
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._download_timeout = aiohttp.ClientTimeout(total=download_timeout)
        self._max_answer_bytes = max_answer_bytes
        self._skipped_device_ids: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        """The normalized console URL, without trailing slash and without ``/mf-rproxy``."""
        return self._base_url

    @property
    def token(self) -> str | None:
        """The token sent by :meth:`list_devices`; settable, for example after a reauth."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value

    @property
    def skipped_device_ids(self) -> tuple[str, ...]:
        """Ids of the devices the last :meth:`list_devices` call left out, in console order.

        A device is left out when it has no key or no data or control channel in its metadata:
        such a device cannot receive an OTA update. Entries without an id are counted with an
        empty string, so ``len()`` of this tuple is always the number of entries skipped.
        """
        return self._skipped_device_ids

    def _url(self, path: str) -> URL:
        """Build the URL of an API path; ``path`` starts with a slash."""
        return URL(f"{self._base_url}{API_PATH}{path}")

    async def _request_json(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        expected: frozenset[int],
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON body.

        Every failure becomes a :class:`ConsoleError` whose message names ``operation`` and the
        status only. The original exception is deliberately not chained: aiohttp exceptions
        hold the URL and a JSON decoding error holds the body, which may contain device keys.
        """
        headers = {"Accept": "application/json"}
        if token is not None:
            # The console expects the bare token, without the "Bearer" scheme.
            headers["Authorization"] = token
        failure: ConsoleError | None = None
        try:
            async with self._session.request(
                method,
                self._url(path),
                headers=headers,
                json=body,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                _check_status(operation, response.status, expected)
                raw = await _read_capped(operation, response, self._max_answer_bytes, "answer")
        except TimeoutError:
            failure = ConsoleConnectionError(f"{operation}: the console did not answer in time")
        except aiohttp.ClientError:
            failure = ConsoleConnectionError(f"{operation}: cannot connect to the console")
        # Raised here, after the except blocks, so that the aiohttp error is not our context.
        if failure is not None:
            raise failure
        try:
            return json.loads(raw)
        except ValueError, RecursionError:
            # RecursionError: JSON nested deeper than the parser's stack is no answer either.
            pass
        raise ConsoleResponseError(f"{operation}: the console did not answer with JSON")

    async def login(self, email: str, password: str) -> str:
        """Exchange the user's email and password for a login token (valid for hours).

        The token is returned, not stored: it is only meant to create an API key with
        :meth:`create_api_key`, and the password is not kept anywhere.
        """
        data = await self._request_json(
            "login",
            "POST",
            "/tokens",
            expected=frozenset({HTTPStatus.OK, HTTPStatus.CREATED}),
            body={"email": email, "password": password},
        )
        token = _non_empty_str(data.get("token")) if isinstance(data, dict) else None
        if token is None:
            raise ConsoleResponseError("login: the answer has no token")
        return token

    async def create_api_key(self, login_token: str, name: str, duration: timedelta) -> ApiKey:
        """Create a revocable API key named ``name`` that expires after ``duration``.

        The console takes the duration in whole seconds; fractions of a second are dropped
        and a duration shorter than one second is refused with ``ValueError``.
        """
        seconds = int(duration.total_seconds())
        if seconds < 1:
            raise ValueError("the API key duration must be at least one second")
        data = await self._request_json(
            "create API key",
            "POST",
            "/keys",
            expected=frozenset({HTTPStatus.OK, HTTPStatus.CREATED}),
            token=login_token,
            body={"name": name, "type": _API_KEY_TYPE, "duration": seconds},
        )
        if not isinstance(data, dict):
            raise ConsoleResponseError("create API key: the answer is not an object")
        key_id = _non_empty_str(data.get("id"))
        value = _non_empty_str(data.get("value"))
        if key_id is None or value is None:
            raise ConsoleResponseError("create API key: the answer has no key id or value")
        return ApiKey(
            key_id=key_id, value=value, expires_at=_parse_timestamp(data.get("expires_at"))
        )

    async def list_devices(self) -> list[ConsoleDevice]:
        """Return the devices of the account that can receive an OTA update.

        Entries without a key or without data and control channels in their metadata are left
        out (see :attr:`skipped_device_ids`); a body that is not a list of objects raises
        :class:`ConsoleResponseError`. A device without a name is named after its id.
        """
        if not self._token:
            raise ConsoleAuthenticationError("list devices: no API key configured")
        data = await self._request_json(
            "list devices",
            "GET",
            "/device/list",
            expected=frozenset({HTTPStatus.OK}),
            token=self._token,
        )
        if not isinstance(data, list):
            raise ConsoleResponseError("list devices: the answer is not a list")
        devices: list[ConsoleDevice] = []
        skipped: list[str] = []
        for entry in data:
            if not isinstance(entry, dict):
                raise ConsoleResponseError("list devices: an entry is not an object")
            device = _parse_device(entry)
            if device is None:
                skipped.append(_non_empty_str(entry.get("id")) or "")
            else:
                devices.append(device)
        self._skipped_device_ids = tuple(skipped)
        _LOGGER.debug("list devices: %d usable, %d skipped", len(devices), len(skipped))
        return devices

    async def download_package(
        self,
        file_id: str,
        device: ConsoleDevice,
        *,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> PackageDownload:
        """Download package ``file_id`` the way ``device`` would, and measure it.

        The endpoint is authenticated by the device's id, key and control channel, so the
        result is exactly what that device would receive. The body is read in chunks; more
        than ``max_bytes`` raises :class:`ConsoleResponseError` without reading the rest. An
        empty body is refused too: the firmware cannot apply it and an OTA request must announce
        a size greater than zero.
        """
        if not file_id:
            raise ValueError("file_id must not be empty")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        operation = "download package"
        url = self._url("/packages/download").with_query(
            fuid=file_id, did=device.device_id, dk=device.key, cid=device.control_channel
        )
        # The device sends no Accept-Encoding, so it receives the bytes as stored. Asking for
        # "identity" keeps a compressing proxy from changing the size and hash we measure.
        headers = {"Accept-Encoding": "identity"}
        failure: ConsoleError | None = None
        try:
            async with self._session.get(
                url, headers=headers, timeout=self._download_timeout, allow_redirects=False
            ) as response:
                _check_status(
                    operation,
                    response.status,
                    frozenset({HTTPStatus.OK}),
                    not_found=True,
                )
                if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                    raise ConsoleResponseError(
                        f"{operation}: the body is content-encoded", status=response.status
                    )
                # Refuse early when the server announces too much, before reading anything.
                if _announced_length(response.headers) > max_bytes:
                    raise ConsoleResponseError(
                        f"{operation}: the package is larger than {max_bytes} bytes",
                        status=response.status,
                    )
                content = await _read_capped(operation, response, max_bytes, "package")
        except TimeoutError:
            failure = ConsoleConnectionError(f"{operation}: the console did not answer in time")
        except aiohttp.ClientError:
            failure = ConsoleConnectionError(f"{operation}: cannot connect to the console")
        # Raised here, after the except blocks: the aiohttp error holds the URL and its key.
        if failure is not None:
            raise failure
        if not content:
            raise ConsoleResponseError(f"{operation}: the package is empty")
        return PackageDownload(
            size=len(content), sha256=hashlib.sha256(content).hexdigest(), content=content
        )


async def _read_capped(
    operation: str, response: aiohttp.ClientResponse, max_bytes: int, what: str
) -> bytes:
    """Return a response's body, read in chunks; raise once it grows past `max_bytes`.

    The cap is enforced while reading, not after a hostile or misconfigured server has made us
    buffer an arbitrary amount of data.
    """
    body = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK_SIZE):
        body += chunk
        if len(body) > max_bytes:
            raise ConsoleResponseError(
                f"{operation}: the {what} is larger than {max_bytes} bytes", status=response.status
            )
    return bytes(body)


def _announced_length(headers: Mapping[str, str]) -> int:
    """Return the Content-Length a server announced, 0 when it gave none or nonsense."""
    try:
        return max(int(headers.get("Content-Length", "0")), 0)
    except ValueError:
        return 0


def _check_status(
    operation: str,
    status: int,
    expected: frozenset[int],
    *,
    not_found: bool = False,
) -> None:
    """Map an HTTP status to the matching error, or return when it is an expected one."""
    _LOGGER.debug("%s: HTTP %d", operation, status)
    if status in expected:
        return
    if status in _AUTH_STATUSES:
        raise ConsoleAuthenticationError(
            f"{operation}: credentials rejected (HTTP {status})", status=status
        )
    if not_found and status == HTTPStatus.NOT_FOUND:
        raise PackageNotFoundError(f"{operation}: unknown file id (HTTP {status})", status=status)
    # Server errors and rate limiting are transient: the caller should retry later.
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR or status == HTTPStatus.TOO_MANY_REQUESTS:
        raise ConsoleConnectionError(
            f"{operation}: the console is unavailable (HTTP {status})", status=status
        )
    raise ConsoleResponseError(f"{operation}: unexpected HTTP status {status}", status=status)


def _parse_device(entry: Mapping[str, Any]) -> ConsoleDevice | None:
    """Build a device from a device list entry, or ``None`` if it cannot receive an OTA."""
    device_id = _non_empty_str(entry.get("id"))
    key = _non_empty_str(entry.get("key"))
    metadata = entry.get("metadata")
    if device_id is None or key is None or not isinstance(metadata, dict):
        return None
    data_channel = _non_empty_str(metadata.get("dataChannel"))
    control_channel = _non_empty_str(metadata.get("controlChannel"))
    if data_channel is None or control_channel is None:
        return None
    return ConsoleDevice(
        device_id=device_id,
        name=_non_empty_str(entry.get("name")) or device_id,
        key=key,
        data_channel=data_channel,
        control_channel=control_channel,
        # A read-only view of a copy: the dataclass is frozen, its metadata should be too.
        metadata=MappingProxyType(dict(metadata)),
    )
