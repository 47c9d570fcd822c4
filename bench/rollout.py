"""Figure 3: Home Assistant's CPU time during a rollout to a fleet, through a real Mosquitto.

The rollout (one wave of every device) is started through the integration's `RolloutManager`,
which publishes a retained request per device. Then two phases are timed with
`time.process_time()` (this process: HA, our integration and the idle console stand-in; the
swarm and Mosquitto are processes of their own):

- waiting: every job is queued, every device asleep; nothing arrives. HA's CPU share over the
  phase, in % of one core, against an idle phase of the same HA before the rollout started.
- reporting: the swarm wakes every device at once (telemetry, applied report, clear, `/stat`),
  until every job is verified: HA's CPU time per device.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
import subprocess
import sys
import time

from homeassistant.core import HomeAssistant

from custom_components.insighio_ota.coordinator import InsighioOtaConfigEntry
from custom_components.insighio_ota.jobs import JobState

from . import harness
from .messages import PACKAGE_COMMIT
from .report import Figure

REPO = Path(__file__).resolve().parents[1]
WAITING_TARGET_PERCENT = 1.0


@dataclass(frozen=True, slots=True)
class Phase:
    """CPU and wall time of a phase."""

    cpu_s: float
    wall_s: float

    @property
    def percent(self) -> float:
        """Return the CPU share of one core over the phase."""
        return 100 * self.cpu_s / self.wall_s


async def _idle(seconds: float) -> Phase:
    """Let HA run for `seconds` with nothing to do but its own timers and the broker's pings."""
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    return Phase(time.process_time() - cpu, time.perf_counter() - wall)


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None  # noqa: S101 - started with a pipe.
    return process.stdout.readline().strip()


async def _start_rollout(hass: HomeAssistant, entry: InsighioOtaConfigEntry) -> None:
    """Register a package and roll it out to every device in one wave."""
    runtime = entry.runtime_data
    package = await runtime.catalogue.async_add(
        file_id="be0c0002",
        file_type=".tar",
        size=4096,
        sha256="0" * 64,
        version="bench-rollout",
        release_notes=None,
        sw_commit=PACKAGE_COMMIT,
    )
    devices = {device_id: device.name for device_id, device in runtime.coordinator.data.items()}
    await runtime.rollouts.async_start(
        package=package,
        devices=devices,
        canary_count=0,
        wave_size=len(devices),
        max_open=len(devices),
    )
    await harness.wait_for(
        lambda: all(
            (job := runtime.tracker.job(device_id)) is not None and job.on_broker
            for device_id in devices
        ),
        120,
        "every request to be on the broker",
    )
    await hass.async_block_till_done()


async def run(run_dir: Path, port: int, devices: int, waiting_s: float) -> list[Figure]:
    """Measure the waiting and the reporting phases of a rollout to `devices` devices."""
    async with (
        harness.console(run_dir, devices) as console,
        harness.home_assistant(harness.fresh(run_dir, "rollout"), port) as hass,
    ):
        entry: InsighioOtaConfigEntry = harness.add_entry(hass, console.url)
        await harness.set_up_and_wait_for_subscriptions(hass, entry, console)
        ids = [device.id for device in console.devices]
        ids_file = run_dir / "swarm-ids.txt"
        ids_file.write_text("\n".join(ids))
        swarm = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed.
            [
                sys.executable,
                "-m",
                "bench.swarm",
                str(port),
                console.control_channel,
                console.data_channel,
                PACKAGE_COMMIT,
                "be0c0002",
                str(ids_file),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if await hass.async_add_executor_job(_line, swarm) != "READY":
                raise RuntimeError("the swarm did not connect")
            await hass.async_block_till_done()
            idle = await _idle(waiting_s)
            await _start_rollout(hass, entry)
            waiting = await _idle(waiting_s)
            tracker = entry.runtime_data.tracker
            wall, cpu = time.perf_counter(), time.process_time()
            assert swarm.stdin is not None  # noqa: S101 - started with a pipe.
            swarm.stdin.write("wake\n")
            swarm.stdin.flush()
            await harness.wait_for(
                lambda: all(
                    (job := tracker.job(device_id)) is not None and job.state is JobState.VERIFIED
                    for device_id in ids
                ),
                300,
                "every job to be verified",
            )
            await hass.async_block_till_done()
            reporting = Phase(time.process_time() - cpu, time.perf_counter() - wall)
            if (done := await hass.async_add_executor_job(_line, swarm)) != "DONE":
                raise RuntimeError(f"the swarm ended with {done!r}")
        finally:
            if swarm.poll() is None:
                swarm.kill()
            swarm.wait()
    return [
        Figure(
            f"rollout, {devices:,} devices: HA CPU while jobs wait",
            waiting.percent,
            "% core",
            WAITING_TARGET_PERCENT,
            f"{waiting.cpu_s * 1e3:.0f} ms CPU in {waiting.wall_s:.0f} s; HA idle before the "
            f"rollout {idle.percent:.2f} %; per device {waiting.percent / devices * 1e3:.2f} "
            "milli-% ",
        ),
        Figure(
            f"rollout, {devices:,} devices: HA CPU per device while reports arrive",
            reporting.cpu_s / devices * 1e3,
            "ms",
            None,
            f"{reporting.cpu_s:.1f} s CPU over {reporting.wall_s:.1f} s until all {devices:,} "
            "jobs were verified (4 messages per device, plus our clear)",
        ),
    ]
