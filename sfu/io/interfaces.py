"""Which local addresses to advertise as host candidates when none are configured."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

SIOCGIFADDR = 0x8915  # linux/sockios.h


def _ipv4_addresses() -> list[str]:
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    return found


def _ipv6_addresses() -> list[str]:
    found = []
    try:
        with open("/proc/net/if_inet6") as table:
            for line in table:
                raw = line.split()[0]
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except OSError:
        pass
    return found


def discover_addresses(ipv6: bool, include_loopback: bool | None) -> list[str]:
    """Interface addresses worth advertising: global and private ones first, loopback only when
    asked or when nothing else exists; never link-local (it needs a scope a remote cannot use)."""
    addresses = _ipv4_addresses() + (_ipv6_addresses() if ipv6 else [])
    usable, loopback = [], []
    for text in addresses:
        ip = ipaddress.ip_address(text)
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            continue
        (loopback if ip.is_loopback else usable).append(text)
    if include_loopback or (include_loopback is None and not usable):
        usable += loopback
    return list(dict.fromkeys(usable))
