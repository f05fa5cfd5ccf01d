"""Shared fixtures: real PostgreSQL and Redis, each test run in its own database and key space.

PostgreSQL: ``IDNODE_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) is the
admin connection; each run creates ``idnode_test_<random>`` and drops it at the end.
Redis: ``IDNODE_TEST_REDIS`` (default ``redis://127.0.0.1:6379``); each run uses its own key prefix.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get("IDNODE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IDNODE_TEST_REDIS", "redis://127.0.0.1:6379")
RUN_ID = uuid.uuid4().hex[:10]
ADMIN_SECRET = "node-admin-secret-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_db(url: str, db: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test run's own, dropped afterwards."""
    import asyncpg

    name = f"idnode_test_{RUN_ID}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_db(PG_ADMIN_URL, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_store_url(pg_url: str) -> Iterator[str]:
    """A fresh schema for one test: the run's database, emptied before use."""
    import asyncpg

    async def reset() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    asyncio.run(reset())
    yield pg_url


@pytest.fixture
def redis_prefix() -> str:
    """A Redis key prefix unique to this test, so runs never disturb each other."""
    return f"idnode-test:{RUN_ID}:{uuid.uuid4().hex[:8]}:"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Every store test runs against both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/idnode.db"
    return request.getfixturevalue("pg_store_url")


@pytest.fixture
async def sqlite_store(tmp_path) -> AsyncIterator:  # type: ignore[no-untyped-def]
    from registry.stores import open_store

    store = await open_store(f"sqlite:///{tmp_path}/idnode.db")
    yield store
    await store.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (Debian's, driven by Playwright) for the test; tests/browser.py launches it."""
    from tests.browser import chromium  # Playwright is imported by the browser tests only

    async with chromium() as b:
        yield b


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a browser test keeps its screenshots: ``IDNODE_SCREENSHOTS=DIR``, else a temporary directory."""
    keep = os.environ.get("IDNODE_SCREENSHOTS")
    out = Path(keep) if keep else tmp_path / "shots"
    out.mkdir(parents=True, exist_ok=True)
    return out
