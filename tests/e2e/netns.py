"""A viewer behind its own network namespace, for end-to-end tests of real network conditions.

    async with ViewerNetns("rate") as ns:
        ns.host_ip          # 10.213.X.1: the root namespace's end of the veth pair (the server listens here)
        ns.viewer_ip        # 10.213.X.2: the namespace's end
        ns.chromium         # an executable wrapper: Chromium run inside the namespace
        await ns.limit_rate(300)            # tc tbf on the host end: traffic towards the viewer
        await ns.add_random_loss(5, port)   # nftables in the namespace: drop 5 % of UDP from `port`
        await ns.add_link_loss(5, port)     # ... of UDP from and to `port` (a publisher's lossy link)

Everything is created by this object and only this object: one namespace, one veth pair with a
private /30 that is free on this host, a qdisc on the host end, one nftables table inside the
namespace. Leaving the block removes all of it, also after a failure (deleting the host end of the
veth pair deletes its peer and the qdisc; deleting the namespace deletes its nftables table).

Needs root (CI runs as root), `ip`, `tc` (tbf only: this kernel has no netem) and `nft`.
Chromium in the namespace is launched by Playwright through `chromium` (a script that runs
`ip netns exec <ns> /usr/bin/chromium "$@"`): Playwright talks to the browser over inherited
pipes, which survive `ip netns exec`.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

CHROMIUM = "/usr/bin/chromium"
SUBNET_BASE = ipaddress.IPv4Network("10.213.0.0/16")  # private; one /30 per namespace: 10.213.X.0/30
COMMAND_TIMEOUT_S = 10.0  # one ip/tc/nft invocation
TBF_BURST = "32kbit"  # bucket depth: a few packets, so that the limit bites at once
TBF_LATENCY = "200ms"  # queue length as a delay: longer queues only hide congestion from the estimate
NFT_TABLE = "sfu_loss"


class NetnsError(RuntimeError):
    pass


async def run(*args: str, check: bool = True, stdin: str | None = None) -> str:
    """Run one command (no shell); raise NetnsError with its stderr when it fails and `check`."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None),
                                          COMMAND_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NetnsError(f"{' '.join(args)}: no answer after {COMMAND_TIMEOUT_S:.0f} s") from None
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: exit {proc.returncode}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def _used_third_octets() -> set[int]:
    """Third octets of the 10.213.X.* addresses already configured in the root namespace."""
    out = await run("ip", "-4", "-o", "addr", "show")
    used = set()
    for word in out.split():
        try:
            addr = ipaddress.IPv4Interface(word).ip
        except ValueError:
            continue
        if addr in SUBNET_BASE:
            used.add(int(str(addr).split(".")[2]))
    return used


async def _existing_links() -> set[str]:
    out = await run("ip", "-o", "link", "show")
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


class ViewerNetns:
    """A network namespace joined to the root namespace by a veth pair (see the module docstring).

    Inputs: entering (creates), `limit_rate` / `clear_rate` / `add_random_loss` / `clear_loss`,
    leaving (removes). Outputs: the addresses, `ns` (the namespace's name) and `chromium` (the
    wrapper to give Playwright as `executable_path`)."""

    def __init__(self, name_prefix: str) -> None:
        self.name_prefix = "".join(c for c in name_prefix if c.isalnum())[:8] or "viewer"
        self.ns: str | None = None
        self.host_if: str | None = None
        self.viewer_if: str | None = None
        self.host_ip: str | None = None
        self.viewer_ip: str | None = None
        self.chromium: str | None = None
        self._tmpdir: str | None = None
        self._loss_rule = False

    async def __aenter__(self) -> ViewerNetns:
        try:
            await self._create()
        except BaseException:
            await self._destroy()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._destroy()

    async def _create(self) -> None:
        if os.geteuid() != 0:
            raise NetnsError("network namespaces need root (CI runs the end-to-end tests as root)")
        for tool in ("ip", "tc", "nft"):
            if shutil.which(tool) is None:
                raise NetnsError(f"`{tool}` is missing (iproute2 / nftables)")
        used = await _used_third_octets()
        links = await _existing_links()
        namespaces = (await run("ip", "netns", "list")).split()
        # Start from a pid-dependent octet so that concurrent test runs rarely race for the same one.
        start = os.getpid() % 250 + 1
        for i in range(250):
            x = (start + i) % 250 + 1
            host_if, viewer_if = f"sfu{x}h", f"sfu{x}v"  # <= 7 characters (IFNAMSIZ allows 15)
            ns = f"sfu-{self.name_prefix}-{x}"
            if x not in used and host_if not in links and viewer_if not in links and ns not in namespaces:
                break
        else:
            raise NetnsError("no free 10.213.X.0/30 subnet left")
        self.ns = ns
        await run("ip", "netns", "add", ns)
        self.host_if, self.viewer_if = host_if, viewer_if
        await run("ip", "link", "add", host_if, "type", "veth", "peer", "name", viewer_if)
        await run("ip", "link", "set", viewer_if, "netns", ns)
        self.host_ip, self.viewer_ip = f"10.213.{x}.1", f"10.213.{x}.2"
        await run("ip", "addr", "add", f"{self.host_ip}/30", "dev", host_if)
        await run("ip", "link", "set", host_if, "up")
        await run("ip", "-n", ns, "addr", "add", f"{self.viewer_ip}/30", "dev", viewer_if)
        await run("ip", "-n", ns, "link", "set", viewer_if, "up")
        await run("ip", "-n", ns, "link", "set", "lo", "up")
        self._tmpdir = tempfile.mkdtemp(prefix=f"sfu-netns-{self.name_prefix}-")
        self.chromium = os.path.join(self._tmpdir, "chromium-in-netns")
        with open(self.chromium, "w") as f:
            f.write(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
        os.chmod(self.chromium, stat.S_IRWXU)

    async def _destroy(self) -> None:
        """Remove whatever was created; every step is attempted, failures are only printed."""
        errors = []
        if self.host_if is not None:
            # Deleting one end deletes the pair and the qdisc on it.
            try:
                await run("ip", "link", "del", self.host_if)
            except NetnsError as e:
                errors.append(str(e))
            self.host_if = None
        if self.ns is not None:
            try:
                await run("ip", "netns", "del", self.ns)  # and the nftables table inside it
            except NetnsError as e:
                errors.append(str(e))
            self.ns = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if errors:
            print("ViewerNetns clean-up: " + "; ".join(errors), file=sys.stderr)

    # -- conditions

    async def limit_rate(self, kbit: int) -> None:
        """Shape traffic towards the viewer (egress of the host end) to `kbit` kbit/s with tbf."""
        assert self.host_if is not None
        await run("tc", "qdisc", "replace", "dev", self.host_if, "root", "tbf",
                  "rate", f"{kbit}kbit", "burst", TBF_BURST, "latency", TBF_LATENCY)

    async def clear_rate(self) -> None:
        assert self.host_if is not None
        await run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)

    async def add_random_loss(self, percent: int, udp_sport: int) -> None:
        """Drop `percent` % of the UDP datagrams from source port `udp_sport` arriving in the namespace."""
        assert self.ns is not None and 0 <= percent <= 100
        await self.clear_loss()
        nft = ("ip", "netns", "exec", self.ns, "nft")
        await run(*nft, "add", "table", "inet", NFT_TABLE)
        await run(*nft, "add", "chain", "inet", NFT_TABLE, "input",
                  "{ type filter hook input priority 0 ; policy accept ; }")
        await run(*nft, "add", "rule", "inet", NFT_TABLE, "input",
                  "udp", "sport", str(udp_sport), "numgen", "random", "mod", "100", "<", str(percent),
                  "counter", "drop")
        self._loss_rule = True

    async def add_link_loss(self, percent: int, server_port: int) -> None:
        """Drop `percent` % of the UDP datagrams between the namespace and the server's `server_port`,
        each way (a client whose own link loses: media and RTCP up, answers and NACKs down)."""
        assert self.ns is not None and 0 <= percent <= 100
        await self.clear_loss()
        nft = ("ip", "netns", "exec", self.ns, "nft")
        await run(*nft, "add", "table", "inet", NFT_TABLE)
        for chain, hook, match in (("input", "input", "sport"), ("output", "output", "dport")):
            await run(*nft, "add", "chain", "inet", NFT_TABLE, chain,
                      f"{{ type filter hook {hook} priority 0 ; policy accept ; }}")
            await run(*nft, "add", "rule", "inet", NFT_TABLE, chain,
                      "udp", match, str(server_port), "numgen", "random", "mod", "100", "<", str(percent),
                      "counter", "drop")
        self._loss_rule = True

    async def loss_dropped_each(self) -> list[int]:
        """Datagrams dropped so far by each loss rule (their nftables counters, in rule order)."""
        assert self.ns is not None
        out = await run("ip", "netns", "exec", self.ns, "nft", "list", "table", "inet", NFT_TABLE, check=False)
        words = out.split()
        return [int(words[i + 1]) for i, w in enumerate(words[:-1]) if w == "packets"]

    async def loss_dropped(self) -> int:
        """Datagrams dropped so far by the loss rule (its nftables counter)."""
        assert self.ns is not None
        out = await run("ip", "netns", "exec", self.ns, "nft", "list", "table", "inet", NFT_TABLE, check=False)
        words = out.split()
        for i, w in enumerate(words[:-1]):
            if w == "packets":
                return int(words[i + 1])
        return 0

    async def clear_loss(self) -> None:
        assert self.ns is not None
        if self._loss_rule:
            await run("ip", "netns", "exec", self.ns, "nft", "delete", "table", "inet", NFT_TABLE, check=False)
            self._loss_rule = False

    def describe(self) -> dict[str, Any]:
        return {"ns": self.ns, "host_if": self.host_if, "host_ip": self.host_ip, "viewer_ip": self.viewer_ip}


class TwoAddressNetns:
    """A namespace shaped like a host with several addresses: loopback plus one link holding two
    IPv4 and two IPv6 addresses (a primary and a secondary each). Nothing crosses into the root
    namespace; code runs inside it with `inside()` (the calling thread joins it, so every socket
    created meanwhile, the server's and the clients', lives there) and Chromium through `chromium`.

        async with TwoAddressNetns("pktinfo") as ns:
            with ns.inside():
                ...                 # ns.v4 == ("10.214.0.1", "10.214.0.2"), ns.v6 likewise

    Leaving the block deletes the namespace and with it the link."""

    V4 = ("10.214.0.1", "10.214.0.2")
    V6 = ("fd00:214::1", "fd00:214::2")

    def __init__(self, name_prefix: str) -> None:
        self.name_prefix = "".join(c for c in name_prefix if c.isalnum() or c == "-")[:20] or "netns"
        self.ns: str | None = None
        self.v4, self.v6 = self.V4, self.V6
        self.chromium: str | None = None
        self._tmpdir: str | None = None

    async def __aenter__(self) -> TwoAddressNetns:
        if os.geteuid() != 0:
            raise NetnsError("network namespaces need root (CI runs the end-to-end tests as root)")
        namespaces = (await run("ip", "netns", "list")).split()
        for i in range(100):
            ns = f"{self.name_prefix}-{os.getpid()}-{i}"
            if ns not in namespaces:
                break
        else:
            raise NetnsError("no free namespace name")
        await run("ip", "netns", "add", ns)
        self.ns = ns
        try:
            await run("ip", "-n", ns, "link", "set", "lo", "up")
            # a veth pair with both ends inside: a link with carrier, no route out of the namespace
            await run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
            for ip in self.v4:
                await run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            for ip in self.v6:
                await run("ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", "eth0", "nodad")
            for link in ("eth0", "eth1"):
                await run("ip", "-n", ns, "link", "set", link, "up")
            self._tmpdir = tempfile.mkdtemp(prefix=f"{self.name_prefix}-")
            self.chromium = os.path.join(self._tmpdir, "chromium-in-netns")
            with open(self.chromium, "w") as f:
                f.write(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
            os.chmod(self.chromium, stat.S_IRWXU)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ns is not None:
            try:
                await run("ip", "netns", "del", self.ns)
            except NetnsError as e:
                print(f"TwoAddressNetns clean-up: {e}", file=sys.stderr)
            self.ns = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Run the calling thread in the namespace for the block (setns(2), CLONE_NEWNET)."""
        assert self.ns is not None
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
        try:
            _setns(there)
            try:
                yield
            finally:
                _setns(here)
        finally:
            os.close(here)
            os.close(there)


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)  # os.setns arrives with Python 3.12
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")
