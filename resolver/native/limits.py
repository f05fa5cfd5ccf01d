"""What one client address may cost the native listeners: the key that groups a client's sockets, and
the UDP reply-byte budget of an address.

UDP has no handshake, so the source address of a request is whatever the sender wrote there; a reply
sent to it goes to someone who may never have asked. :class:`UdpBudget` bounds what the node sends to
one address in a second (a token bucket refilled at ``rate`` bytes per second, holding at most
``rate``); the UDP listener answers a request that would overdraw it with a small truncated reply
instead, which the client follows by asking again over TCP, where the handshake proves the address.
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["UdpBudget", "address_key"]


def address_key(peer: Any) -> str:
    """The client a socket address belongs to: the IPv4 address, or the /64 network of an IPv6 address
    (one host usually holds a whole /64). Unix sockets and unknown peers share one key."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return "?"
    host = peer[0]
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class UdpBudget:
    """Reply bytes each address may still be sent, refilled at ``rate`` bytes per second up to ``rate``.

    At most ``max_addresses`` addresses are tracked: when full, addresses whose budget has refilled
    (they carry no state) are forgotten, or failing that the eighth tracked longest, so memory and the
    cost per reply stay bounded whatever the sources. ``rate`` 0 means no budget: every reply is allowed."""

    def __init__(self, rate: int, *, max_addresses: int = 65_536) -> None:
        self.rate = rate
        self.max_addresses = max_addresses
        self._left: dict[str, list[float]] = {}  # key -> [bytes left, when] (updated in place)

    def __len__(self) -> int:
        return len(self._left)

    def spend(self, key: str, size: int, now: float) -> bool:
        """Take ``size`` bytes from ``key``'s budget if it holds them; False (nothing taken) if not."""
        rate = self.rate
        if rate <= 0:
            return True
        entry = self._left.get(key)
        if entry is None:
            if len(self._left) >= self.max_addresses:
                self._prune(now)
            entry = self._left[key] = [float(rate), now]
            left = float(rate)
        else:
            left = entry[0] + (now - entry[1]) * rate
            if left > rate:
                left = float(rate)
        entry[1] = now
        if size > left:
            entry[0] = left
            return False
        entry[0] = left - size
        return True

    def charge(self, key: str, size: int, now: float) -> None:
        """Take ``size`` bytes whether or not the budget holds them (the small truncated replies); the
        debt is at most one second's worth, so an address recovers a second after a flood ends."""
        if self.rate > 0 and not self.spend(key, size, now):
            entry = self._left[key]
            entry[0] = max(entry[0] - size, -float(self.rate))

    def _prune(self, now: float) -> None:
        rate = self.rate
        full = [k for k, (left, when) in self._left.items() if left + (now - when) * rate >= rate]
        if not full:  # every address is spending: forget the ones tracked longest
            full = list(self._left)[: max(1, len(self._left) // 8)]
        for key in full:
            del self._left[key]
