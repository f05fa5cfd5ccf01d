"""The clause-8 award rule: policy parameters and a pure ``compute_award``.

Every number of clause 8 is a :class:`Policy` parameter. ``compute_award`` does integer arithmetic only
and touches no clock, file or network; ``Policy.from_file`` is the one helper that reads a file.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

__all__ = ["MODES", "AwardResult", "Mode", "Policy", "PolicyError", "compute_award"]

Mode = Literal["per_enterprise", "pooled"]
MODES: tuple[str, ...] = get_args(Mode)


class PolicyError(ValueError):
    """An invalid policy, policy file or award input."""


def _check_int(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise PolicyError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Policy:
    """Parameters of clause 8 (defaults: the Baiyun District draft).

    ``min_enterprise_registrations`` may be 0, which makes every enterprise eligible, even one that
    registered nothing. ``increment_registrations`` must be >= 1 since the pooled reading divides by it.
    """

    base_enterprises: int = 20
    base_registrations: int = 200_000
    base_award_yuan: int = 200_000
    increment_registrations: int = 10_000
    increment_award_yuan: int = 10_000
    cap_yuan: int = 1_000_000
    min_enterprise_registrations: int = 1
    mode: Mode = "per_enterprise"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "mode":
                _check_int(f.name, getattr(self, f.name), 1 if f.name == "increment_registrations" else 0)
        if self.mode not in MODES:
            raise PolicyError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        """Build a policy from a mapping of field names; missing fields take their defaults."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"policy must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise PolicyError(f"unknown policy key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Load a ``.toml`` or ``.json`` policy file; fields sit at top level or under a ``policy`` table."""
        path = Path(path)
        suffix = path.suffix.lower()
        try:
            if suffix == ".toml":
                with path.open("rb") as fh:
                    data = tomllib.load(fh)
            elif suffix == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
            else:
                raise PolicyError(f"{path}: policy file must end in .toml or .json")
        except (OSError, tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read policy: {exc}") from exc
        if isinstance(data, Mapping) and isinstance(data.get("policy"), Mapping):
            data = data["policy"]
        try:
            return cls.from_mapping(data)
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (round-trips through ``from_mapping``)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AwardResult:
    """The award and how it was reached.

    ``base_yuan`` is the base award (0 when the base fails), ``increment_yuan`` is
    ``increment_enterprises * increment_award_yuan``, ``uncapped_yuan`` their sum and ``award_yuan`` the
    amount after the policy cap and the optional clause-17 contribution cap; ``capped_by`` names the cap
    that set ``award_yuan`` when one did.
    """

    award_yuan: int
    base_yuan: int
    increment_yuan: int
    eligible_enterprises: int
    total_registrations: int
    increment_enterprises: int
    qualified: bool
    reason: str
    mode: str
    capped_by: str | None
    uncapped_yuan: int
    increment_enterprise_keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (keys as a list)."""
        d = dataclasses.asdict(self)
        d["increment_enterprise_keys"] = list(self.increment_enterprise_keys)
        return d


def _normalize_counts(counts: Mapping[str, int] | Iterable[int]) -> tuple[list[int], list[str] | None]:
    if isinstance(counts, Mapping):
        keys: list[str] | None = list(counts)
        for k in keys:
            if not isinstance(k, str):
                raise PolicyError(f"enterprise keys must be strings, got {k!r}")
        values = [counts[k] for k in keys]
    elif isinstance(counts, str | bytes) or not isinstance(counts, Iterable):
        raise PolicyError(f"counts must be a mapping or an iterable of integers, got {type(counts).__name__}")
    else:
        keys, values = None, list(counts)
    for i, v in enumerate(values):
        _check_int(f"registrations of {keys[i]!r}" if keys is not None else f"counts[{i}]", v)
    return values, keys


def _per_enterprise_increments(
    values: list[int], keys: list[str] | None, eligible: list[int], slack_n: int, slack_t: int, policy: Policy
) -> list[int]:
    """Indices of the enterprises set aside: the smallest qualifying ones, as many as the base allows.

    Setting aside the k smallest minimises the registrations removed for any k, so the greedy prefix is
    the maximum. Ties go by key, so the choice does not depend on mapping order.
    """
    qualifying = sorted(
        (i for i in eligible if values[i] >= policy.increment_registrations),
        key=lambda i: (values[i], keys[i] if keys is not None else ""),
    )
    chosen: list[int] = []
    for i in qualifying[:slack_n]:
        if values[i] > slack_t:
            break
        slack_t -= values[i]
        chosen.append(i)
    return chosen


def _fmt(n: int) -> str:
    return f"{n:,}"


def _plural(n: int, word: str) -> str:
    return f"{_fmt(n)} {word}" if n == 1 else f"{_fmt(n)} {word}s"


def compute_award(
    counts: Mapping[str, int] | Iterable[int],
    policy: Policy = Policy(),
    contribution_cap_yuan: int | None = None,
) -> AwardResult:
    """Apply clause 8 to one promoter's per-enterprise registration counts for one period.

    ``counts`` maps enterprise key -> registrations, or is an iterable of registration counts.
    ``contribution_cap_yuan`` is the promoter's previous-year economic contribution (clause 17), if known.
    """
    if not isinstance(policy, Policy):
        raise PolicyError(f"policy must be a Policy, got {type(policy).__name__}")
    if contribution_cap_yuan is not None:
        _check_int("contribution_cap_yuan", contribution_cap_yuan)
    values, keys = _normalize_counts(counts)
    eligible = [i for i, v in enumerate(values) if v >= policy.min_enterprise_registrations]
    n = len(eligible)
    t = sum(values[i] for i in eligible)
    slack_n, slack_t = n - policy.base_enterprises, t - policy.base_registrations
    qualified = slack_n >= 0 and slack_t >= 0

    increment_keys: tuple[str, ...] = ()
    if not qualified:
        e = 0
    elif policy.mode == "pooled":
        e = min(slack_n, slack_t // policy.increment_registrations)
    else:
        chosen = _per_enterprise_increments(values, keys, eligible, slack_n, slack_t, policy)
        e = len(chosen)
        if keys is not None:
            increment_keys = tuple(sorted(keys[i] for i in chosen))

    base_yuan = policy.base_award_yuan if qualified else 0
    increment_yuan = policy.increment_award_yuan * e
    uncapped = base_yuan + increment_yuan
    award, capped_by = uncapped, None
    if award > policy.cap_yuan:
        award, capped_by = policy.cap_yuan, "policy_cap"
    if contribution_cap_yuan is not None and award > contribution_cap_yuan:
        award, capped_by = contribution_cap_yuan, "contribution_cap"

    if qualified:
        reason = (
            f"Base met: {_plural(n, 'eligible enterprise')} >= {_fmt(policy.base_enterprises)} and "
            f"{_plural(t, 'registration')} >= {_fmt(policy.base_registrations)}; "
            f"{_plural(e, 'increment enterprise')} ({policy.mode} reading) add{'s' if e == 1 else ''} "
            f"{_fmt(increment_yuan)} CNY; award {_fmt(award)} CNY"
        )
        if capped_by == "policy_cap":
            reason += f" (policy cap; uncapped {_fmt(uncapped)} CNY)."
        elif capped_by == "contribution_cap":
            reason += f" (clause-17 contribution cap; uncapped {_fmt(uncapped)} CNY)."
        else:
            reason += "."
    else:
        failures = []
        if slack_n < 0:
            failures.append(f"{_plural(n, 'eligible enterprise')} < {_fmt(policy.base_enterprises)} required")
        if slack_t < 0:
            failures.append(f"{_plural(t, 'registration')} < {_fmt(policy.base_registrations)} required")
        reason = f"Base not met: {' and '.join(failures)}; no award."

    return AwardResult(
        award_yuan=award,
        base_yuan=base_yuan,
        increment_yuan=increment_yuan,
        eligible_enterprises=n,
        total_registrations=t,
        increment_enterprises=e,
        qualified=qualified,
        reason=reason,
        mode=policy.mode,
        capped_by=capped_by,
        uncapped_yuan=uncapped,
        increment_enterprise_keys=increment_keys,
    )
