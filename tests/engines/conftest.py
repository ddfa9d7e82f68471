"""Fixtures shared with the service tests: the exporter subprocess."""

from tests.service.conftest import exporter  # noqa: F401 - a fixture, used by name
