"""End-to-end tests: a real Mosquitto, the simulator and HA's real MQTT integration."""
