"""`tetra info` (GetInfo: the agent's version, probed kernel features, configuration and build, as
protojson) and `tetra tracingpolicy domains` (ListDomains: one policy domain a line)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from google.protobuf import json_format

from tetragon.api.gen.tetragon import sensors_pb2
from tetragon.cli.tetra_client import call_once, write_line

__all__ = ["add_info", "cmd_domains", "cmd_info"]

AddGlobals = Callable[[argparse.ArgumentParser, bool], None]


def add_info(commands: Any, add_globals: AddGlobals) -> None:
    info = commands.add_parser("info", help="the agent's version, kernel features and configuration")
    add_globals(info, True)


def cmd_info(args: argparse.Namespace, stdout: TextIO) -> int:
    response = call_once(args, "GetInfo", sensors_pb2.GetInfoRequest())
    write_line(stdout, json_format.MessageToJson(response, preserving_proto_field_name=True, indent=2))
    return 0


def cmd_domains(args: argparse.Namespace, stdout: TextIO) -> int:
    response = call_once(args, "ListDomains", sensors_pb2.ListDomainsRequest())
    for domain in response.domains:
        write_line(stdout, domain)
    return 0
