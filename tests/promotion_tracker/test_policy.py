"""Clause-8 award rule: the worked examples of clause-8.md, validation, policy files and properties."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promotion_tracker.policy import AwardResult, Policy, PolicyError, compute_award

PER, POOLED = Policy(), Policy(mode="pooled")

# (enterprises' registrations, per_enterprise award, pooled award) — the table in clause-8.md.
WORKED_EXAMPLES = [
    ("19 enterprises, 1,000,000 in all", [1_000_000 - 18 * 50_000] + [50_000] * 18, 0, 0),
    ("20 x 10,000", [10_000] * 20, 200_000, 200_000),
    ("20 enterprises, 199,999 in all", [9_999] + [10_000] * 19, 0, 0),
    ("21 x 10,000", [10_000] * 21, 210_000, 210_000),
    ("5 x 50,000 + 20 x 100", [50_000] * 5 + [100] * 20, 210_000, 250_000),
    ("100 x 10,000", [10_000] * 100, 1_000_000, 1_000_000),
    ("150 x 10,000 (capped)", [10_000] * 150, 1_000_000, 1_000_000),
    ("20 x 10,000 + 10 x 9,999", [10_000] * 20 + [9_999] * 10, 290_000, 290_000),
    ("40 x 9,000", [9_000] * 40, 200_000, 360_000),
    ("22 x 0 + 20 x 10,000 + 2 x 20,000", [0] * 22 + [10_000] * 20 + [20_000] * 2, 220_000, 220_000),
]


@pytest.mark.parametrize(("label", "counts", "per_enterprise", "pooled"), WORKED_EXAMPLES)
def test_worked_examples(label: str, counts: list[int], per_enterprise: int, pooled: int) -> None:
    assert compute_award(counts, PER).award_yuan == per_enterprise
    assert compute_award(counts, POOLED).award_yuan == pooled
    # The same counts keyed by enterprise give the same award.
    keyed = {f"e{i:03d}": c for i, c in enumerate(counts)}
    assert compute_award(keyed, PER).award_yuan == per_enterprise
    assert compute_award(keyed, POOLED).award_yuan == pooled


def test_result_fields_mixed_row() -> None:
    counts = {f"big{i}": 50_000 for i in range(5)} | {f"small{i:02d}": 100 for i in range(20)}
    r = compute_award(counts)
    assert isinstance(r, AwardResult)
    assert (r.eligible_enterprises, r.total_registrations, r.increment_enterprises) == (25, 252_000, 1)
    assert (r.base_yuan, r.increment_yuan, r.uncapped_yuan, r.award_yuan) == (
        200_000,
        10_000,
        210_000,
        210_000,
    )
    assert r.qualified and r.mode == "per_enterprise" and r.capped_by is None
    assert r.increment_enterprise_keys == ("big0",)  # ties broken by key
    assert r.reason == (
        "Base met: 25 eligible enterprises >= 20 and 252,000 registrations >= 200,000; "
        "1 increment enterprise (per_enterprise reading) adds 10,000 CNY; award 210,000 CNY."
    )
    pooled = compute_award(counts, POOLED)
    assert pooled.increment_enterprises == 5 and pooled.increment_enterprise_keys == ()
    assert "(pooled reading)" in pooled.reason
    d = r.to_dict()
    assert d["increment_enterprise_keys"] == ["big0"] and d["award_yuan"] == 210_000
    assert json.loads(json.dumps(d)) == d


def test_unqualified_reason_and_zero_enterprises_not_eligible() -> None:
    r = compute_award([0] * 5 + [100_000] * 19)
    assert not r.qualified and r.award_yuan == 0 and r.uncapped_yuan == 0 and r.capped_by is None
    assert r.eligible_enterprises == 19
    assert r.reason == "Base not met: 19 eligible enterprises < 20 required; no award."
    r = compute_award([1] * 10)
    assert r.reason == (
        "Base not met: 10 eligible enterprises < 20 required and 10 registrations < 200,000 required; no award."
    )
    assert compute_award([]).award_yuan == 0


def test_policy_cap_and_contribution_cap() -> None:
    r = compute_award([10_000] * 100)
    assert (r.increment_enterprises, r.uncapped_yuan, r.award_yuan) == (80, 1_000_000, 1_000_000)
    assert r.capped_by is None  # exactly at the cap is not capped
    r = compute_award([10_000] * 150)
    assert (r.increment_enterprises, r.uncapped_yuan, r.award_yuan) == (130, 1_500_000, 1_000_000)
    assert r.capped_by == "policy_cap"
    assert "policy cap" in r.reason
    r = compute_award([10_000] * 25, contribution_cap_yuan=180_000)
    assert (r.uncapped_yuan, r.award_yuan, r.capped_by) == (250_000, 180_000, "contribution_cap")
    assert "clause-17" in r.reason
    r = compute_award([10_000] * 150, contribution_cap_yuan=5_000_000)
    assert (r.award_yuan, r.capped_by) == (1_000_000, "policy_cap")
    r = compute_award([10_000] * 25, contribution_cap_yuan=0)
    assert (r.award_yuan, r.capped_by) == (0, "contribution_cap")
    assert compute_award([1] * 3, contribution_cap_yuan=0).capped_by is None


def test_min_enterprise_registrations_and_custom_policy() -> None:
    counts = [5] * 3 + [1_000] * 2
    strict = Policy(base_enterprises=3, base_registrations=2_000, min_enterprise_registrations=10)
    assert compute_award(counts, strict).eligible_enterprises == 2
    loose = Policy(
        base_enterprises=3,
        base_registrations=2_000,
        base_award_yuan=7,
        increment_registrations=5,
        increment_award_yuan=3,
        min_enterprise_registrations=0,
    )
    r = compute_award([*counts, 0], loose)
    assert (r.eligible_enterprises, r.total_registrations) == (6, 2_015)
    assert (r.increment_enterprises, r.award_yuan) == (3, 7 + 3 * 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_enterprises": -1},
        {"cap_yuan": 1.5},
        {"base_registrations": True},
        {"increment_award_yuan": "10000"},
        {"increment_registrations": 0},
        {"min_enterprise_registrations": -1},
        {"mode": "pooled "},
        {"mode": None},
    ],
)
def test_policy_validation(kwargs: dict) -> None:
    with pytest.raises(PolicyError):
        Policy(**kwargs)


def test_policy_error_is_value_error_and_message() -> None:
    with pytest.raises(ValueError, match="base_enterprises must be >= 0, got -1"):
        Policy(base_enterprises=-1)
    with pytest.raises(PolicyError, match="mode must be one of per_enterprise, pooled"):
        Policy(mode="both")  # type: ignore[arg-type]
    assert Policy(min_enterprise_registrations=0).min_enterprise_registrations == 0


@pytest.mark.parametrize("counts", [[1, -1], [1.0], [True], ["3"], {"a": -5}, {"a": 2.5}, {1: 3}, "123", 5, None])
def test_bad_counts(counts: object) -> None:
    with pytest.raises(PolicyError):
        compute_award(counts)  # type: ignore[arg-type]


def test_bad_contribution_cap_and_policy() -> None:
    with pytest.raises(PolicyError):
        compute_award([1], contribution_cap_yuan=-1)
    with pytest.raises(PolicyError):
        compute_award([1], contribution_cap_yuan=1.0)  # type: ignore[arg-type]
    with pytest.raises(PolicyError):
        compute_award([1], {"mode": "pooled"})  # type: ignore[arg-type]


def test_counts_from_generator() -> None:
    assert compute_award(10_000 for _ in range(21)).award_yuan == 210_000


def test_from_mapping_and_to_dict() -> None:
    p = Policy.from_mapping({"mode": "pooled", "cap_yuan": 500_000})
    assert p == Policy(mode="pooled", cap_yuan=500_000)
    assert Policy.from_mapping(p.to_dict()) == p
    assert Policy().to_dict()["base_registrations"] == 200_000
    with pytest.raises(PolicyError, match=r"unknown policy key.*base_enterprize"):
        Policy.from_mapping({"base_enterprize": 20})
    with pytest.raises(PolicyError):
        Policy.from_mapping([("mode", "pooled")])  # type: ignore[arg-type]


def test_from_file_toml(tmp_path) -> None:
    top = tmp_path / "top.toml"
    top.write_text('mode = "pooled"\nbase_enterprises = 10\n', encoding="utf-8")
    assert Policy.from_file(top) == Policy(mode="pooled", base_enterprises=10)
    table = tmp_path / "table.toml"
    table.write_text("[policy]\ncap_yuan = 800_000\n\n[other]\nx = 1\n", encoding="utf-8")
    assert Policy.from_file(str(table)) == Policy(cap_yuan=800_000)
    bad = tmp_path / "bad.toml"
    bad.write_text("cap_yuan = \n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"bad\.toml"):
        Policy.from_file(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("cap = 1\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"unknown\.toml: unknown policy key"):
        Policy.from_file(unknown)


def test_from_file_json(tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(Policy(mode="pooled", increment_registrations=5_000).to_dict()), encoding="utf-8")
    assert Policy.from_file(path) == Policy(mode="pooled", increment_registrations=5_000)
    path.write_text(json.dumps({"policy": {"base_award_yuan": 150_000}}), encoding="utf-8")
    assert Policy.from_file(path).base_award_yuan == 150_000
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(PolicyError, match="must be a mapping"):
        Policy.from_file(path)
    path.write_text('{"cap_yuan": 1e6}', encoding="utf-8")
    with pytest.raises(PolicyError, match="cap_yuan must be an integer"):
        Policy.from_file(path)


def test_from_file_errors(tmp_path) -> None:
    with pytest.raises(PolicyError, match=r"\.toml or \.json"):
        Policy.from_file(tmp_path / "p.yaml")
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.from_file(tmp_path / "missing.toml")


# --- properties against a brute force, on scaled-down policies ---------------------------------------


def brute_force_increments(counts: list[int], policy: Policy) -> int | None:
    """E by exhaustive search, or None when the base fails."""
    eligible = [c for c in counts if c >= policy.min_enterprise_registrations]
    n, t = len(eligible), sum(eligible)
    if n < policy.base_enterprises or t < policy.base_registrations:
        return None
    if policy.mode == "pooled":
        e = 0
        while e + 1 <= n - policy.base_enterprises and (e + 1) * policy.increment_registrations <= (
            t - policy.base_registrations
        ):
            e += 1
        return e
    qualifying = [c for c in eligible if c >= policy.increment_registrations]
    best = 0
    for k in range(len(qualifying) + 1):
        for subset in itertools.combinations(qualifying, k):
            if n - k >= policy.base_enterprises and t - sum(subset) >= policy.base_registrations:
                best = max(best, k)
    return best


small_policies = st.builds(
    Policy,
    base_enterprises=st.integers(0, 4),
    base_registrations=st.integers(0, 50),
    base_award_yuan=st.integers(0, 100),
    increment_registrations=st.integers(1, 10),
    increment_award_yuan=st.integers(0, 30),
    cap_yuan=st.integers(0, 300),
    min_enterprise_registrations=st.integers(0, 3),
    mode=st.sampled_from(["per_enterprise", "pooled"]),
)
small_counts = st.lists(st.integers(0, 25), max_size=9)


@settings(max_examples=400, deadline=None)
@given(counts=small_counts, policy=small_policies, contribution=st.none() | st.integers(0, 300))
def test_matches_brute_force(counts: list[int], policy: Policy, contribution: int | None) -> None:
    r = compute_award(counts, policy, contribution)
    e = brute_force_increments(counts, policy)
    assert r.qualified == (e is not None)
    expected = 0 if e is None else min(policy.base_award_yuan + policy.increment_award_yuan * e, policy.cap_yuan)
    if contribution is not None:
        expected = min(expected, contribution)
    assert r.award_yuan == expected
    assert r.increment_enterprises == (e or 0)
    assert all(isinstance(v, int) for v in (r.award_yuan, r.base_yuan, r.increment_yuan, r.uncapped_yuan))


@settings(max_examples=300, deadline=None)
@given(counts=small_counts, policy=small_policies)
def test_keyed_set_aside_is_feasible(counts: list[int], policy: Policy) -> None:
    keyed = {f"k{i}": c for i, c in enumerate(counts)}
    r = compute_award(keyed, policy)
    assert r.award_yuan == compute_award(counts, policy).award_yuan
    if policy.mode == "pooled" or not r.qualified:
        assert r.increment_enterprise_keys == ()
        return
    aside = r.increment_enterprise_keys
    assert len(aside) == len(set(aside)) == r.increment_enterprises
    assert all(keyed[k] >= max(policy.increment_registrations, policy.min_enterprise_registrations) for k in aside)
    rest = [c for k, c in keyed.items() if k not in aside and c >= policy.min_enterprise_registrations]
    assert len(rest) >= policy.base_enterprises and sum(rest) >= policy.base_registrations


@settings(max_examples=300, deadline=None)
@given(counts=small_counts, extra=st.integers(0, 25), policy=small_policies)
def test_adding_an_enterprise_never_lowers_the_award(counts: list[int], extra: int, policy: Policy) -> None:
    assert compute_award([*counts, extra], policy).award_yuan >= compute_award(counts, policy).award_yuan


@settings(max_examples=300, deadline=None)
@given(counts=small_counts, policy=small_policies, contribution=st.none() | st.integers(0, 300))
def test_award_bounded_and_pooled_dominates(counts: list[int], policy: Policy, contribution: int | None) -> None:
    r = compute_award(counts, policy, contribution)
    assert 0 <= r.award_yuan <= min(r.uncapped_yuan, policy.cap_yuan)
    if contribution is not None:
        assert r.award_yuan <= contribution
    per = compute_award(counts, Policy.from_mapping(policy.to_dict() | {"mode": "per_enterprise"}))
    pooled = compute_award(counts, Policy.from_mapping(policy.to_dict() | {"mode": "pooled"}))
    assert per.increment_enterprises <= pooled.increment_enterprises
