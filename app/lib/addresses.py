"""The policy of outbound requests (app/lib/outbound.py): their limits, and which addresses they may
reach: never a cloud metadata service, link-local, multicast, reserved or unspecified address; private
and loopback ones only where `OUTBOUND_ALLOW_PRIVATE` or `OUTBOUND_ALLOWED_NETWORKS` say so. An IPv6
address that carries an IPv4 one (IPv4-mapped, 6to4, NAT64) is judged by the IPv4 it carries."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from app.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Cloud metadata services: refused whatever the settings say (most are link-local anyway).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack...
        "169.254.170.2",  # AWS ECS task credentials
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure WireServer: public, but answers the VMs of the platform's own tenant
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, yet still routed inside some networks


@dataclass(frozen=True)
class Policy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    connect_timeout_s: float = 5.0
    timeout_s: float = 30.0
    max_body_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        out = settings.outbound
        networks = tuple(
            ipaddress.ip_network(c.strip(), strict=False)
            for c in out.allowed_networks.split(",")
            if c.strip()
        )
        return cls(
            allow_private=out.allow_private,
            allowed_networks=networks,
            connect_timeout_s=out.connect_timeout_s,
            timeout_s=out.timeout_s,
            max_body_bytes=out.max_body_bytes,
            max_redirects=out.max_redirects,
        )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress, policy: Policy) -> str | None:
    """Why `ip` may not be reached under `policy` (a short reason), or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return refusal(inner, policy)
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved:
        return "reserved"
    if ip.is_global and ip not in _SHARED and ip not in _SITE_LOCAL:
        return None
    if policy.allow_private or any(ip in network for network in policy.allowed_networks):
        return None
    return "loopback" if ip.is_loopback else "private"
