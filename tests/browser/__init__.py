"""Browser checks: the demo's real Home Assistant driven by headless Chromium."""
