"""Tetragon JSON conformance: events parse into GetEventsResponse and are written back byte-identical.

The published examples come from Go protojson (UseProtoNames, no whitespace); every one of them is
reproduced byte for byte (conformance tier: Tetragon's events.json from $TETRAGON_EXAMPLES), and so is
every event our own agent recorded (tests/data/events.json). Known, justified differences (none of
them occurs in the published file):
* Go's protojson may insert random whitespace in some builds (detrand); Tetragon's files have none
  and neither do ours.
* Fields our .proto leaves out because their numbers are not pinned down (KprobeArgument error_arg /
  sockaddrun_arg, the `envs` lists of newer releases) make event_to_proto raise ParseError instead
  of being carried through.
* No event message has float fields, so Go's float formatting is not reproduced.
"""

from __future__ import annotations

import orjson
import pytest
from google.protobuf import json_format

from tests.conftest import conformance_params, recorded_event_lines, tetragon_event_lines
from tetragon.api.convert import dumps_event, event_to_proto, proto_to_event
from tetragon.api.gen.tetragon import events_pb2


def _assert_round_trip_byte_identical(line: bytes) -> None:
    msg = event_to_proto(orjson.loads(line))
    assert isinstance(msg, events_pb2.GetEventsResponse)
    assert msg.WhichOneof("event") is not None
    assert dumps_event(proto_to_event(msg)) == line
    # and through the wire format too
    again = events_pb2.GetEventsResponse.FromString(msg.SerializeToString())
    assert dumps_event(proto_to_event(again)) == line


@pytest.mark.conformance
@pytest.mark.parametrize("index", conformance_params(range(len(tetragon_event_lines()))))
def test_published_events_round_trip_byte_identical(index: int) -> None:
    _assert_round_trip_byte_identical(tetragon_event_lines()[index])


@pytest.mark.parametrize("index", range(len(recorded_event_lines())))
def test_recorded_events_round_trip_byte_identical(index: int) -> None:
    _assert_round_trip_byte_identical(recorded_event_lines()[index])


# Hand-written lines following Go protojson rules, covering what the published file does not.
SYNTHETIC = [
    # kprobe: int64/uint64 as strings, oneof scalar 0 kept, enums by name, label after the oneof
    # value (declaration order, not number order), wrappers kept at 0, bytes as base64.
    b'{"process_kprobe":{"process":{"exec_id":"eDox","pid":1,"uid":0,"binary":"/bin/cat",'
    b'"start_time":"2024-04-14T02:18:14Z","auid":4294967295,"tid":1},'
    b'"function_name":"security_file_permission","args":[{"file_arg":{"path":"/etc/passwd",'
    b'"permission":"-rw-r--r--"}},{"int_arg":2},{"size_arg":"18446744073709551615"},'
    b'{"long_arg":"-5"},{"bytes_arg":"AAEC/w=="},{"process_credentials_arg":{"uid":0,"gid":0},'
    b'"label":"creds"},{"string_arg":"","label":"empty"}],"return":{"int_arg":0},'
    b'"action":"KPROBE_ACTION_POST","kernel_stack_trace":[{"offset":"12",'
    b'"symbol":"x"}],"policy_name":"file-monitoring","return_action":"KPROBE_ACTION_POST",'
    b'"tags":["a","b"]},"node_name":"tetragon-dev-control-plane","time":"2024-04-14T02:18:14.376304204Z"}',
    # exit with its own time, fractional digits trimmed to 3 and 6, sorted node_labels map.
    b'{"process_exit":{"process":{"exec_id":"eTox","pid":2,"cwd":"/","in_init_tree":false},'
    b'"signal":"SIGKILL","status":9,"time":"2024-01-01T00:00:00.100Z"},"node_name":"n",'
    b'"time":"2024-01-01T00:00:00.123456Z","cluster_name":"c1","node_labels":{"a":"1","b":"2","z":"3"}}',
    # pod maps sorted, unicode and escapes as Go writes them.
    b'{"process_exec":{"process":{"exec_id":"ejox","binary":"/bin/\xc3\xa9\\u001b","arguments":"a\\"b\\\\",'
    b'"pod":{"namespace":"ns","name":"p","container":{"id":"c","pid":0,"security_context":'
    b'{"privileged":true}},"pod_labels":{"A":"x","a":"y"},"workload_kind":"Pod"},'
    b'"cap":{"permitted":["CAP_CHOWN","DAC_OVERRIDE"]},"ns":{"uts":{"inum":4026531838,"is_host":true}},'
    b'"binary_properties":{"setuid":0,"privileges_changed":["PRIVILEGES_RAISED_EXEC_FILE_SETUID"],'
    b'"file":{"inode":{"number":"42","links":0},"path":"/memfd:x"}}}},"node_name":"n"}',
    b'{"process_throttle":{"type":"THROTTLE_START","cgroup":"/k"},"node_name":"n"}',
    b'{"rate_limit_info":{"number_of_dropped_process_events":"7"},"node_name":"n"}',
    b'{"process_lsm":{"process":{"exec_id":"eA=="},"function_name":"file_open","policy_name":"p",'
    b'"args":[{"syscall_id":{"id":309,"abi":"x64"}},{"bpf_cmd_arg":"BPF_PROG_LOAD"},'
    b'{"sockaddr_arg":{"family":"AF_INET","addr":"1.2.3.4","port":80}}],"action":"KPROBE_ACTION_SIGKILL",'
    b'"ima_hash":"sha256:00"},"node_name":"n"}',
]


@pytest.mark.parametrize("line", SYNTHETIC)
def test_synthetic_events_round_trip(line: bytes) -> None:
    assert dumps_event(proto_to_event(event_to_proto(orjson.loads(line)))) == line


def _assert_agrees_with_json_format(lines: list[bytes]) -> None:
    for line in lines:
        msg = event_to_proto(orjson.loads(line))
        ours = proto_to_event(msg)
        theirs = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        assert ours == theirs  # dict equality ignores order; ordering is checked byte-wise above


@pytest.mark.conformance
def test_proto_to_event_agrees_with_json_format_on_published_events() -> None:
    _assert_agrees_with_json_format(tetragon_event_lines())


def test_proto_to_event_agrees_with_json_format_on_content() -> None:
    _assert_agrees_with_json_format(recorded_event_lines() + SYNTHETIC)


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(json_format.ParseError):
        event_to_proto({"process_exec": {"process": {"no_such_field": 1}}})


def test_dumps_event_is_compact_without_newline() -> None:
    out = dumps_event({"node_name": "n", "time": "2024-01-01T00:00:00Z"})
    assert out == b'{"node_name":"n","time":"2024-01-01T00:00:00Z"}'
