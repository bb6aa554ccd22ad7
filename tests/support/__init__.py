"""Helpers shared by test suites: real components started for a test (a Mosquitto broker)."""
