"""A stand-in for the insigh.io console and for insighioNode devices.

The package is a development and test tool; it is not shipped with the Home Assistant
integration. It lets end-to-end tests and the demo exercise the OTA flow against something that
behaves like the real firmware (insighioNode 4.1.0), quirks included, as described in
``/work/shared/protocol.md``.
"""

__all__: list[str] = []
