"""Fixtures of the unit tests: a real in-process gRPC server fed by a real event bus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tetragon.api.server import GrpcServer
from tetragon.events.bus import EventBus


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def server(bus: EventBus, request: pytest.FixtureRequest) -> Iterator[GrpcServer]:
    """Serves on a free localhost port; a test module sets SERVER_VERSION to what it expects."""
    srv = GrpcServer(bus, "localhost:0", version=getattr(request.module, "SERVER_VERSION", "v0.0.0-test"))
    srv.start()
    yield srv
    srv.stop(grace=0.5)
