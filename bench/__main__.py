"""`python -m bench`: measure the integration at fleet scale and print one line per figure.

Every figure is measured in this one run, against a Mosquitto of its own and a real Home
Assistant; the machine may be noisy, so the per-message figures come with the ratio to HA's own
dispatch measured right around them. `--fuzz` runs the fuzz tests with 100,000 examples instead.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
import logging
import os
from pathlib import Path
import subprocess
import sys

from . import harness, messages, rollout, setup
from .report import Figure

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("setup", "messages", "rollout")
FUZZ_EXAMPLES = 100_000


@dataclass(frozen=True, slots=True)
class Scale:
    """How big each figure's fleet is."""

    setup_sizes: tuple[int, ...]
    message_devices: int
    rollout_devices: int
    waiting_s: float


FULL = Scale(
    setup_sizes=(1_000, 10_000), message_devices=1_000, rollout_devices=1_000, waiting_s=30
)
QUICK = Scale(setup_sizes=(50,), message_devices=50, rollout_devices=50, waiting_s=2)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Return the command line's options."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small fleets: a smoke check that every figure runs"
    )
    parser.add_argument("--only", choices=FIGURES, help="measure one figure only")
    parser.add_argument(
        "--fuzz",
        action="store_true",
        help=f"run the fuzz tests (tests/fuzz) with {FUZZ_EXAMPLES:,} examples instead",
    )
    return parser.parse_args(argv)


async def measure(scale: Scale, only: str | None) -> list[Figure]:
    """Run the chosen figures against one broker; return them in order."""
    figures: list[Figure] = []
    with harness.run_dir() as run_dir, harness.mosquitto(run_dir) as port:
        if only in (None, "setup"):
            figures += await setup.run(run_dir, port, scale.setup_sizes)
        if only in (None, "messages"):
            figures += await messages.run(run_dir, port, scale.message_devices)
        if only in (None, "rollout"):
            figures += await rollout.run(run_dir, port, scale.rollout_devices, scale.waiting_s)
    return figures


def fuzz() -> int:
    """Run the fuzz tests with many examples; return pytest's exit code."""
    if not (REPO / "tests" / "fuzz").is_dir():
        print("bench: tests/fuzz does not exist in this checkout", file=sys.stderr)
        return 1
    return subprocess.call(
        [sys.executable, "-m", "pytest", "tests/fuzz", "-q", "-p", "no:randomly", "-x"],
        cwd=REPO,
        env={**os.environ, "INSIGHIO_FUZZ_EXAMPLES": str(FUZZ_EXAMPLES)},
    )


def quiet_logging() -> None:
    """Keep HA's expected warnings off the figures, but not errors of the code under measure.

    Expected: HA's notice about an untested custom integration, and the broker going away at
    shutdown.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("homeassistant.loader").setLevel(logging.ERROR)
    logging.getLogger("homeassistant.components.mqtt.client").setLevel(logging.CRITICAL)
    logging.getLogger("aiohttp.access").setLevel(logging.ERROR)
    logging.getLogger("aiohttp_fast_zlib").setLevel(logging.ERROR)
    # HA's cap of 10,000 enabled entities per config entry: the setup figure counts what it left
    # out ("N of M entities registered").
    for platform in ("event", "sensor", "update"):
        logging.getLogger(f"homeassistant.components.{platform}").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the figures; the exit code is 1 when a target is missed."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.fuzz:
        return fuzz()
    quiet_logging()
    figures = asyncio.run(measure(QUICK if args.quick else FULL, args.only))
    for figure in figures:
        print(figure.line(), flush=True)
    missed = [figure for figure in figures if figure.passed is False]
    print(f"{len(figures)} figures, {len(missed)} missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
