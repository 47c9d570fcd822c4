"""Command line of the simulator: ``python -m simulator [all|console|devices|make-package]``.

``all`` (the default) runs the console stand-in and the simulated devices together. When both
are up, exactly one line ``READY {json}`` goes to stdout so that a test or the demo can wait for
it and read the URLs and identities from it; everything else is logged to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import hashlib
import json
import logging
from pathlib import Path
import shutil
import signal
import sys
import tempfile
from typing import Any, cast, get_args

from simulator.console import ConsoleServer, ConsoleState
from simulator.device import (
    FAILURE_MODES,
    DeviceFleet,
    DeviceSettings,
    FailureMode,
    load_version,
)
from simulator.identities import DEFAULT_SEED, device_identities, project_identity
from simulator.packages import PackageFormat, write_demo_packages, write_package

_LOGGER = logging.getLogger(__name__)

COMMANDS = ("all", "console", "devices", "make-package")


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Add the options every running mode shares."""
    parser.add_argument("--devices", type=int, default=3, help="number of devices (3)")
    parser.add_argument("--seed", default=DEFAULT_SEED, help="seed of all identities")
    parser.add_argument(
        "--state-dir", type=Path, help="folder that keeps the devices' versions across restarts"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")


def _add_console(parser: argparse.ArgumentParser) -> None:
    """Add the console stand-in's options."""
    parser.add_argument("--console-host", default="127.0.0.1", help="listen address")
    parser.add_argument("--console-port", type=int, default=0, help="listen port (0: any free)")
    parser.add_argument("--packages", type=Path, help="package folder (default: a temp folder)")
    parser.add_argument(
        "--demo-packages", action="store_true", help="write the two demo packages first"
    )
    parser.add_argument("--email", default="demo@insigh.io", help="account email")
    parser.add_argument("--password", default="console-demo", help="account password")
    parser.add_argument(
        "--fault-file",
        type=Path,
        help="while this file holds 'error' or 'hang', every API request answers HTTP 500 or "
        "never answers (a console outage, for fault tests)",
    )


def _add_devices(parser: argparse.ArgumentParser) -> None:
    """Add the simulated devices' options."""
    parser.add_argument("--mqtt-host", default="127.0.0.1", help="broker host")
    parser.add_argument("--mqtt-port", type=int, required=True, help="broker port")
    parser.add_argument("--wake-period", type=float, default=30.0, help="seconds between wakes")
    parser.add_argument(
        "--listen-window", type=float, default=5.0, help="seconds of listening per wake"
    )
    parser.add_argument("--free-flash", type=int, default=1_000_000, help="free flash in bytes")
    parser.add_argument("--cellular", action="store_true", help="make every device cellular")
    parser.add_argument(
        "--reboot-delay",
        type=float,
        default=1.0,
        help="seconds between an applied OTA and the /stat of the reboot (1)",
    )
    parser.add_argument(
        "--failing-devices",
        type=_non_negative,
        default=0,
        help="number of devices that fail every OTA, from --failing-from on (0)",
    )
    parser.add_argument(
        "--failing-from",
        type=_non_negative,
        default=0,
        help="index (0-based) of the first failing device (0)",
    )
    parser.add_argument(
        "--failure",
        choices=FAILURE_MODES,
        default="apply",
        help="how failing devices fail: apply (can not apply), download (can not download), "
        "space (not enough space, also in /stat) (apply)",
    )


def _non_negative(value: str) -> int:
    """Parse a count or an index: an integer >= 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with its four sub-commands."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="insigh.io console stand-in and simulated insighioNode devices",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_all = sub.add_parser("all", help="console stand-in and devices (default)")
    for add in (_add_common, _add_console, _add_devices):
        add(run_all)
    console = sub.add_parser("console", help="only the console stand-in")
    _add_common(console)
    _add_console(console)
    devices = sub.add_parser("devices", help="only the simulated devices")
    _add_common(devices)
    _add_devices(devices)
    devices.add_argument("--console-url", help="console base URL, used for package downloads")
    devices.add_argument("--email", default="demo@insigh.io", help=argparse.SUPPRESS)
    devices.add_argument("--password", default="console-demo", help=argparse.SUPPRESS)
    make = sub.add_parser("make-package", help="write an OTA package file")
    make.add_argument("--out", type=Path, required=True, help="output folder")
    make.add_argument("--file-id", required=True, help="file id (the name before the dot)")
    make.add_argument(
        "--format", choices=get_args(PackageFormat), default="ustar", help="package layout"
    )
    make.add_argument("--sw-commit", help="sw_commit written into version.py")
    make.add_argument("--sw-branch", help="sw_branch written into version.py")
    make.add_argument("--files", type=int, default=1, help="number of application files")
    return parser


def _make_package(args: argparse.Namespace) -> int:
    """Write one package and print ``<path> <size> <sha256>``."""
    path = write_package(
        args.out,
        args.file_id,
        cast("PackageFormat", args.format),
        sw_commit=args.sw_commit,
        sw_branch=args.sw_branch,
        files=args.files,
    )
    data = path.read_bytes()
    print(f"{path} {len(data)} {hashlib.sha256(data).hexdigest()}", flush=True)
    return 0


async def _run(args: argparse.Namespace) -> int:
    """Run the console stand-in and/or the devices until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    project = project_identity(args.seed)
    identities = device_identities(args.devices, args.seed)
    server: ConsoleServer | None = None
    fleet: DeviceFleet | None = None
    temp_packages: Path | None = None
    try:
        console_url: str | None = getattr(args, "console_url", None)
        if args.command in ("all", "console"):
            packages_dir: Path | None = args.packages
            if packages_dir is None:
                packages_dir = temp_packages = Path(tempfile.mkdtemp(prefix="insighio-packages-"))
            packages_dir.mkdir(parents=True, exist_ok=True)
            if args.demo_packages:
                for path in write_demo_packages(packages_dir):
                    _LOGGER.info("wrote demo package %s", path)
            state = ConsoleState(
                args.email,
                args.password,
                project,
                identities,
                packages_dir,
                fault_file=args.fault_file,
            )
            server = ConsoleServer(state, args.console_host, args.console_port)
            console_url = await server.start()
        if args.command in ("all", "devices"):
            settings = DeviceSettings(
                mqtt_host=args.mqtt_host,
                mqtt_port=args.mqtt_port,
                console_url=console_url,
                wake_period=args.wake_period,
                listen_window=args.listen_window,
                free_flash=args.free_flash,
                cellular=args.cellular,
                state_dir=args.state_dir,
                reboot_delay=args.reboot_delay,
                failing_devices=args.failing_devices,
                failing_from=args.failing_from,
                failure=cast("FailureMode", args.failure),
            )
            fleet = DeviceFleet(identities, project, settings)
            fleet.start()
        ready: dict[str, Any] = {
            "console_url": console_url,
            "email": args.email,
            "password": args.password,
            "data_channel": project.data_channel,
            "control_channel": project.control_channel,
            "devices": [
                {
                    "id": identity.id,
                    "name": identity.name,
                    "serial": identity.serial,
                    "hw_version": identity.hw_version,
                    "sw_commit": load_version(args.state_dir, identity.id)[1],
                }
                for identity in identities
            ],
        }
        print("READY " + json.dumps(ready), flush=True)
        await stop.wait()
        _LOGGER.info("stopping")
    finally:
        if fleet is not None:
            await asyncio.to_thread(fleet.stop)
        if server is not None:
            await server.stop()
        if temp_packages is not None:
            shutil.rmtree(temp_packages, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen sub-command."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0] not in COMMANDS and arguments[0] not in ("-h", "--help")):
        arguments.insert(0, "all")
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command == "make-package":
        try:
            return _make_package(args)
        except ValueError as err:
            parser.error(str(err))
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        parser.error(f"unknown log level {args.log_level!r}")
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiohttp's debug output can include raw request lines, whose query holds device keys.
    logging.getLogger("aiohttp").setLevel(max(level, logging.INFO))
    return asyncio.run(_run(args))
