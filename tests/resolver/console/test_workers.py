"""Console sessions on the embedded defaults with two worker processes (``idnode serve --workers 2``,
SQLite): a session made by one worker is known to the other, and a sign-out by either ends it for both.
Every request goes on a new connection, which the kernel hands to either worker."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess

ROUNDS = 30


async def _fresh(session: aiohttp.ClientSession, method: str, url: str, **kw: object) -> aiohttp.ClientResponse:
    async with session.request(method, url, allow_redirects=False, **kw) as r:  # type: ignore[arg-type]
        await r.read()
        return r


async def test_two_workers_share_sessions_and_sign_out(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", "--workers", "2").wait_ready()
    try:
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection every request
        async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as http:
            async with http.get(f"{node.url}/console/signin") as page:
                token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
            assert token is not None
            form = {"csrf": token.group(1), "identity": "88.118.8", "secret": ADMIN_SECRET}
            r = await _fresh(http, "POST", f"{node.url}/console/signin", data=form)
            assert r.status == 303, r.status
            statuses = [(await _fresh(http, "GET", f"{node.url}/console/status")).status for _ in range(ROUNDS)]
            assert statuses == [200] * ROUNDS
            async with http.get(f"{node.url}/console/status") as page:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
            assert csrf is not None
            cookie = jar.filter_cookies(node.url + "/console")["idnode_console"].value  # type: ignore[arg-type]
            r = await _fresh(http, "POST", f"{node.url}/console/signout", data={"csrf": csrf.group(1)})
            assert r.status == 303 and r.headers["Location"].endswith("signed-out")
        # The signed-out cookie, replayed to either worker, finds no session.
        replay = {"Cookie": f"idnode_console={cookie}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            after = [await _fresh(http, "GET", f"{node.url}/console/status", headers=replay) for _ in range(ROUNDS)]
        assert [(r.status, r.headers.get("Location")) for r in after] == [(303, "/console/signin")] * ROUNDS
    finally:
        node.stop()
