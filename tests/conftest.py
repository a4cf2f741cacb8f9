"""Shared fixtures: a pipeline of real processes, and the plugin launched as Grafana does."""

from collections.abc import Iterator

import pytest
from support import Pipeline, plugin_of
from users import User, created_user

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


@pytest.fixture(scope="session")
def stranger() -> Iterator[User]:
    """Another local user, in no group of ours (skips unless root)."""
    with created_user("zsstranger") as user:
        yield user


@pytest.fixture(scope="session")
def grafana_user() -> Iterator[User]:
    """Another local user in the group `zsgrafana`, as a packaged Grafana's user would be."""
    with created_user("zsviewer", group="zsgrafana") as user:
        yield user
