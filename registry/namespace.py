"""The node's namespace: its store, settings and clock, how it parses names, which handles it
answers for, and authoritative (uncached) reads of records. Every part of the registry shares one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from registry.errors import NotResponsible
from registry.jsonvalues import ValueLimits
from registry.model import HandleName, Record, normalise_prefix, parse_handle, prefix_handle_of
from registry.packing import unpack_record
from registry.stores.base import HandleStore

__all__ = ["Namespace", "NodeSettings", "wall_clock"]


@dataclass(frozen=True)
class NodeSettings:
    prefix: str = "88.118.8"
    max_handle_length: int = 255
    case_sensitive_suffix: bool = True
    value_limits: ValueLimits = field(default_factory=ValueLimits)
    scrypt_threads: int = 1  # threads hashing and checking secret keys (off the event loop)
    scrypt_max_jobs: int = 16  # scrypt jobs queued or running; more credential checks are "busy"
    auth_cache_ttl: float = 300.0  # seconds a successful secret-key check is remembered


def wall_clock() -> int:
    """Seconds since the epoch: the timestamps written into values and rows."""
    return int(time.time())


class Namespace:
    """What every part of the registry knows about this node."""

    def __init__(self, store: HandleStore, settings: NodeSettings, clock: Callable[[], int] = wall_clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.node_prefix = settings.prefix
        self.node_prefix_norm = normalise_prefix(self.node_prefix)
        self.node_admin_handle = prefix_handle_of(self.node_prefix)
        self.node_admin_key = parse_handle(self.node_admin_handle).key
        self._names: dict[str, HandleName] = {}

    def parse(self, text: str) -> HandleName:
        """Parse with the node's rules. Hot handles are parsed once: names are immutable, so the
        few thousand most recent ones are kept (bad input is never cached, it raises)."""
        name = self._names.get(text)
        if name is None:
            name = parse_handle(
                text,
                max_length=self.settings.max_handle_length,
                case_sensitive_suffix=self.settings.case_sensitive_suffix,
            )
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[text] = name
        return name

    async def read_record(self, key: str) -> Record | None:
        """The record as the store has it now (authoritative, no cache)."""
        row = await self.store.get(key)
        return unpack_record(row.packed) if row else None

    def is_responsible(self, name: HandleName) -> bool:
        """Is the handle in this node's namespace (its prefix, or a prefix derived from it)?"""
        prefix = normalise_prefix(name.suffix) if name.is_prefix_handle else normalise_prefix(name.prefix)
        node = self.node_prefix_norm
        return prefix == node or prefix.startswith(node + ".")

    def require_responsible(self, name: HandleName) -> None:
        if not self.is_responsible(name):
            raise NotResponsible(f"this node is not responsible for {name.text}", name.text)
