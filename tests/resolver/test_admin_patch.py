"""PATCH /api/enterprises checks the whole body before it changes anything."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("promoter", [9999, "same"])
async def test_a_bad_promoter_leaves_the_status_unchanged(client, admin, onboard, promoter):
    ent = await onboard()
    if promoter == "same":
        promoter = ent["promoter"]
    r = await client.patch(
        f"/api/enterprises/{ent['prefix']}", json={"status": "disabled", "promoter": promoter}, headers=admin
    )
    assert r.status == 400 and (await r.json())["responseCode"] == 4
    got = await (await client.get(f"/api/enterprises/{ent['prefix']}", headers=admin)).json()
    assert got["status"] == "active" and got["promoter"] == ent["promoter"]
    assert len(got["attributions"]) == 1
