"""Smoke tests: one file per service of tests/stack, each proving the fixture is the real thing."""
