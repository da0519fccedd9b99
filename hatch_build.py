"""Build hook: compile the BPF objects and generate the gRPC/protobuf modules.

Runs for wheels and for editable installs, so `pip install -e .` leaves a working tree with
src/tetragon/_bpfobj/*.o and src/tetragon/api/gen/*_pb2*.py in place.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        subprocess.run(["make", "-C", str(root / "bpf")], check=True)
        subprocess.run([sys.executable, str(root / "src/tetragon/api/genproto.py")], check=True)
        subprocess.run([sys.executable, str(root / "src/tetragon/k8s/genproto.py")], check=True)
