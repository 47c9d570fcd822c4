"""Tests of the insigh.io OTA integration."""
