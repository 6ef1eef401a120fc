"""A private network namespace joined to the host by a veth pair, to cut a worker off.

Only the test's own /30 (10.200.x.y) is used, between the namespace and the host end of
the veth: no route, no NAT, nothing else on the machine is touched. Cutting the link is
`ip link set <ns end> down` inside the namespace; the host end keeps its address, so
processes on the host still reach the coordinator bound there.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from dataclasses import dataclass

NEEDS = ("the partition test needs `ip netns` and veth pairs (root, or CAP_NET_ADMIN and "
         "CAP_SYS_ADMIN; CI runs as root)")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; a failure raises AssertionError with the command and its stderr."""
    try:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise AssertionError(f"`ip` (iproute2) is not installed: {NEEDS}") from None
    if check and out.returncode != 0:
        raise AssertionError(f"`ip {' '.join(args)}` failed ({out.stderr.strip()}): {NEEDS}")
    return out


def _free_subnet() -> ipaddress.IPv4Network:
    used = ip("-4", "-o", "addr", "show").stdout
    for _ in range(100):
        net = ipaddress.IPv4Network(
            f"10.200.{secrets.randbelow(256)}.{secrets.randbelow(64) * 4}/30")
        if f" 10.200.{net.network_address.packed[2]}." not in used:
            return net
    raise AssertionError("no free 10.200.x.y/30 for the test's veth pair")


@dataclass
class Namespace:
    """A namespace NAME with veth `host` (host side, host_ip) and `inner` (inside, inner_ip)."""

    name: str
    host: str
    inner: str
    host_ip: str
    inner_ip: str

    @classmethod
    def create(cls) -> Namespace:
        """Create the namespace, the veth pair and their addresses; fails loudly."""
        tag = secrets.token_hex(3)
        net = _free_subnet()
        first, second = list(net.hosts())
        ns = cls(f"tmchaos-{tag}", f"tmh{tag}", f"tmn{tag}", str(first), str(second))
        ip("netns", "add", ns.name)
        try:
            ip("link", "add", ns.host, "type", "veth", "peer", "name", ns.inner)
            ip("link", "set", ns.inner, "netns", ns.name)
            ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host)
            ip("link", "set", ns.host, "up")
            ns.run("ip", "addr", "add", f"{ns.inner_ip}/30", "dev", ns.inner)
            ns.run("ip", "link", "set", ns.inner, "up")
            ns.run("ip", "link", "set", "lo", "up")
        except BaseException:
            ns.delete()
            raise
        return ns

    def run(self, *cmd: str) -> None:
        """Run a command inside the namespace."""
        ip("netns", "exec", self.name, *cmd)

    def prefix(self) -> list[str]:
        """argv prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Partition: the namespace's end of the link goes down."""
        self.run("ip", "link", "set", self.inner, "down")

    def heal(self) -> None:
        """The link comes back."""
        self.run("ip", "link", "set", self.inner, "up")

    def delete(self) -> None:
        """Remove the namespace (which removes both veth ends)."""
        ip("netns", "delete", self.name, check=False)
        ip("link", "delete", self.host, check=False)
