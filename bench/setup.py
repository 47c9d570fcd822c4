"""Figure 1: setting the integration up for a fleet of console devices.

Each measurement runs on a fresh Home Assistant (registries empty, as on the first setup) so that
the runs do not see each other's devices: one run is timed, one runs under tracemalloc, one under
cProfile (each instrument slows the code down, so none of them shares a run with the clock).
"""

from __future__ import annotations

import cProfile
from dataclasses import dataclass
import gc
from pathlib import Path
import pstats
import time
import tracemalloc

from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er

from custom_components import insighio_ota
from custom_components.insighio_ota.const import DOMAIN

from . import harness
from .report import Figure

OUR_PACKAGE = str(Path(insighio_ota.__file__).parent)
SETUP_TARGET_S = 2.0
SETUP_TARGET_DEVICES = 10_000
MEMORY_TARGET_KB = 5.0
WARM_UP_DEVICES = 5


@dataclass(frozen=True, slots=True)
class SetupRun:
    """What one setup of the integration took."""

    wall_s: float
    cpu_s: float
    devices: int
    entities: int


async def _set_up(
    hass: HomeAssistant, console: harness.Console, entry: ConfigEntry | None = None
) -> SetupRun:
    """Set the integration up (a new entry unless given) and wait until every entity is added."""
    if entry is None:
        entry = harness.add_entry(hass, console.url)
    wall, cpu = time.perf_counter(), time.process_time()
    if not await hass.config_entries.async_setup(entry.entry_id):
        raise RuntimeError(f"the integration did not set up: {entry.state}")
    await hass.async_block_till_done()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if entry.state is not ConfigEntryState.LOADED:
        raise RuntimeError(f"the integration did not load: {entry.state}")
    return SetupRun(
        wall,
        cpu,
        len(dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)),
        len(er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)),
    )


async def _timed(
    run_dir: Path, port: int, console: harness.Console, name: str
) -> tuple[SetupRun, SetupRun]:
    """Time the first setup (registries empty), then a reload of the same entry.

    The reload finds every device and entity in the registries, as each start of Home Assistant
    after the first does: that is the setup a user waits for day to day.
    """
    async with harness.home_assistant(harness.fresh(run_dir, name), port) as hass:
        first = await _set_up(hass, console)
        (entry,) = hass.config_entries.async_entries(DOMAIN)
        if not await hass.config_entries.async_unload(entry.entry_id):
            raise RuntimeError("the integration did not unload")
        await hass.async_block_till_done()
        return first, await _set_up(hass, console, entry)


async def _memory(run_dir: Path, port: int, console: harness.Console, size: int) -> tuple[int, int]:
    """Return the bytes a setup leaves allocated: in total, and by a line of our package.

    "Ours" counts the allocations whose innermost frame is a line of `custom_components/
    insighio_ota` (the objects our code builds: console devices, entities, their device info);
    what HA's registries and state machine allocate for the same devices is in the total.
    """
    async with harness.home_assistant(harness.fresh(run_dir, f"memory-{size}"), port) as hass:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            await _set_up(hass, console)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    ours = tracemalloc.Filter(True, f"{OUR_PACKAGE}/*")
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    own = sum(
        stat.size_diff
        for stat in after.filter_traces([ours]).compare_to(before.filter_traces([ours]), "lineno")
    )
    return total, own


async def _profile(run_dir: Path, port: int, console: harness.Console) -> tuple[float, float]:
    """Return the self time of our package's functions and the total, under cProfile."""
    async with harness.home_assistant(harness.fresh(run_dir, "profile"), port) as hass:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            await _set_up(hass, console)
        finally:
            profiler.disable()
    stats = pstats.Stats(profiler)
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in rows.values())
    ours = sum(row[2] for key, row in rows.items() if key[0].startswith(OUR_PACKAGE))
    return ours, total


async def run(run_dir: Path, port: int, sizes: tuple[int, ...]) -> list[Figure]:
    """Measure the setup at each fleet size; the largest is also profiled."""
    figures: list[Figure] = []
    # The first setup in a process also imports our modules and HA's entity platforms; a user's
    # HA has done that before, so a small fleet pays it first, unmeasured.
    async with harness.console(run_dir, WARM_UP_DEVICES) as console:
        await _timed(run_dir, port, console, "setup-warm-up")
    for size in sizes:
        async with harness.console(run_dir, size) as console:
            timed, again = await _timed(run_dir, port, console, f"setup-{size}")
            total, own = await _memory(run_dir, port, console, size)
            expected = 3 * size + 4
            figures.append(
                Figure(
                    f"setup, {size:,} devices: wall time",
                    timed.wall_s,
                    "s",
                    SETUP_TARGET_S if size >= SETUP_TARGET_DEVICES else None,
                    f"cpu {timed.cpu_s:.2f} s; {timed.devices:,} devices, "
                    f"{timed.entities:,} of {expected:,} entities registered",
                )
            )
            figures.append(
                Figure(
                    f"setup, {size:,} devices: wall time, registries filled (HA restart)",
                    again.wall_s,
                    "s",
                    SETUP_TARGET_S if size >= SETUP_TARGET_DEVICES else None,
                    f"cpu {again.cpu_s:.2f} s; a reload of the same entry",
                )
            )
            figures.append(
                Figure(
                    f"setup, {size:,} devices: memory per device (ours)",
                    own / size / 1024,
                    "KB",
                    MEMORY_TARGET_KB,
                    f"all of HA incl. registries and states: {total / size / 1024:.1f} KB/device",
                )
            )
            if size == max(sizes):
                ours, profiled = await _profile(run_dir, port, console)
                figures.append(
                    Figure(
                        f"setup, {size:,} devices: our code's share (cProfile self time)",
                        100 * ours / profiled,
                        "%",
                        None,
                        f"{ours:.2f} s of {profiled:.2f} s profiled; "
                        f"~{timed.wall_s * ours / profiled:.2f} s of the unprofiled wall time",
                    )
                )
    return figures
