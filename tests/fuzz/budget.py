"""How many examples each fuzz test runs, and how hypothesis picks them.

`INSIGHIO_FUZZ_EXAMPLES` is the total number of examples across every fuzz test; each test takes
its share of it (`SHARES`). Without it the total is `DEFAULT_TOTAL`, sized so that CI spends well
under a minute on the fuzz tests with `-n 2`; `scripts/bench --fuzz` sets 100000.

Reproducibility: without the variable (CI, `scripts/test`), hypothesis is derandomized and keeps
no example database, so a run explores exactly the examples of the previous run on the same code:
a red CI is caused by the change under test, never by the luck of the draw, and rerunning it shows
the same failure. With the variable set, a run is an exploration: examples are random, so every
large run covers new ground, and failures are kept in the local example database (`.hypothesis/`,
ignored by git) so that the next run replays them first. Hypothesis prints the failing example
and the `@reproduce_failure` blob either way; a bug found this way is kept as an explicit
`@example` beside the property that found it.
"""

import os
from typing import Any, Final

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

ENV: Final = "INSIGHIO_FUZZ_EXAMPLES"
DEFAULT_TOTAL: Final = 4000

# The share of the total each test gets. A tracker example is a whole sequence of MQTT messages
# through Home Assistant, a few hundred times dearer than one parser call, so it gets few.
SHARES: Final[dict[str, float]] = {
    "senml": 0.10,
    "ota_message": 0.10,
    "ota_report_shape": 0.08,
    "ota_request_round_trip": 0.06,
    "request_fields": 0.04,
    "stat": 0.10,
    "stat_shape": 0.08,
    "topics": 0.06,
    "topic_round_trip": 0.04,
    "package_bytes": 0.08,
    "package_archives": 0.19,
    "tracker": 0.07,
}


def total_examples() -> int:
    """Return the total number of examples asked for (`INSIGHIO_FUZZ_EXAMPLES`, else default)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_TOTAL
    total = int(raw)
    if total < 1:
        raise ValueError(f"{ENV} must be a positive number of examples (got {raw!r})")
    return total


def exploring() -> bool:
    """Return True when INSIGHIO_FUZZ_EXAMPLES asks for a run of its own size."""
    return bool(os.environ.get(ENV, "").strip())


def fuzz_settings(name: str, **overrides: Any) -> settings:
    """Return the settings of the fuzz test `name`: its share of the examples, reproducibility."""
    options: dict[str, Any] = {
        "max_examples": max(1, round(total_examples() * SHARES[name])),
        # Two cores shared by several processes: a slow example is noise, not a finding.
        "deadline": None,
        "derandomize": not exploring(),
        "database": DirectoryBasedExampleDatabase(".hypothesis/examples") if exploring() else None,
        "print_blob": True,
        # Large inputs are the point of a fuzz test of a parser.
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    }
    options.update(overrides)
    return settings(**options)
