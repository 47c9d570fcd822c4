"""The browser test needs no test Home Assistant of its own: it drives the demo's."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker: `-m browser` runs only the browser test, `-m "not browser"` not."""
    config.addinivalue_line(
        "markers", "browser: drives the demo's Home Assistant with headless Chromium"
    )


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations() -> None:
    """Override the unit tests' autouse fixture, which would start a test `hass` for nothing."""
