"""Loads the real-service test stack (tests/stack) as a pytest plugin: see tests/stack/README.md."""

pytest_plugins = ["tests.stack.plugin", "tests.helpers.fixtures"]
