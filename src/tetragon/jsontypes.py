"""The one name for an event in flight between the pipeline's stages and its sinks."""

from __future__ import annotations

from typing import Any

# A Tetragon event as a dict shaped exactly like a line of Tetragon's JSON export
# (tetragon.api.convert turns it into the protobuf GetEventsResponse and back).
Event = dict[str, Any]
