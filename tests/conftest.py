"""Shared fixtures: a pipeline of real processes, and the plugin launched as Grafana does."""

from collections.abc import Iterator

import pytest
from support import Pipeline, plugin_of

from services.hostemu.host import PluginHost


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    """A broker and two workers, shared by a module's tests (modules needing other flags override it)."""
    pipeline = Pipeline(2)
    try:
        yield pipeline
    finally:
        pipeline.close()


@pytest.fixture
def host(pipeline: Pipeline) -> Iterator[PluginHost]:
    """A fresh plugin process per test."""
    with plugin_of(pipeline) as host:
        yield host
