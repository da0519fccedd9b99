"""Network argument blobs of kernel functions rendered as Tetragon renders them: `skb` as `skb_arg`
(KprobeSkb). `socket` blobs are socks (`sock_arg`), `net_device` names strings (`string_arg`), and a
kernel `sockaddr` is a `sockaddr_arg` like a syscall's: events.generic_args renders those."""

from __future__ import annotations

import ipaddress

from tetragon.abi import events_h as L
from tetragon.jsontypes import Event

AF_INET, AF_INET6 = 2, 10


def skb_variant(payload: bytes, family_names: dict[int, str], protocol_names: dict[int, str]) -> Event:
    """KprobeSkb of a gen_skb payload: fields in the proto's order, zero values left out as protojson
    does; `proto` is the L4 protocol number and `protocol` its name, `family` the address family's."""
    if len(payload) < L.GEN_SKB.size:
        return {"skb_arg": {}}
    (
        family,
        _type,
        proto,
        _state,
        mark,
        prio,
        sport,
        dport,
        _cookie,
        saddr,
        daddr,
        length,
        hsh,
        sp_len,
        sp_olen,
    ) = L.GEN_SKB.unpack_from(payload)
    # (field, value) in KprobeSkb's order; protojson leaves zero values out
    fields: list[tuple[str, object]] = [("hash", hsh), ("len", length), ("priority", prio), ("mark", mark)]
    if family in (AF_INET, AF_INET6):
        fields += [("saddr", ip_text(saddr, family)), ("daddr", ip_text(daddr, family))]
    fields += [("sport", sport), ("dport", dport), ("proto", proto)]
    fields += [("sec_path_len", sp_len), ("sec_path_olen", sp_olen)]
    fields += [("protocol", proto and protocol_names.get(proto, str(proto)))]
    fields += [("family", family and family_names.get(family, str(family)))]
    body: Event = {name: value for name, value in fields if value}
    return {"skb_arg": body}


def ip_text(raw: bytes, family: int) -> str:
    """An address of `family` (IPv4 in the first 4 bytes) as text."""
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return str(ipaddress.IPv4Address(raw[:4]))
