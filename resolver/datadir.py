"""The node's data directory: private to the node's user whenever the node keeps files in it."""

from __future__ import annotations

import os
from pathlib import Path

from registry.private_files import private_dir
from registry.stores import store_class
from registry.stores.sqlite import SQLiteStore, database_file
from resolver.config import Config

__all__ = ["prepare_data_dir"]


def prepare_data_dir(config: Config) -> None:
    """Create the data directory 0700, or make it private, when the SQLite store or the report key
    lives in it. A store elsewhere (PostgreSQL, another directory) leaves it alone."""
    data_dir = Path(os.path.abspath(config.data_dir))
    kept: list[str] = []
    try:
        embedded = store_class(config.store_url) is SQLiteStore
    except ValueError:  # an unknown scheme: opening the store says so
        embedded = False
    if embedded:
        kept.append(database_file(config.store_url) or "")
    if config.report_key_file:
        kept.append(os.path.abspath(config.report_key_file))
    if any(path and Path(path).is_relative_to(data_dir) for path in kept):
        private_dir(data_dir)
