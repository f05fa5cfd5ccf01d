"""The rule of the chosen reading and each award's explanation, in Chinese and in English.

Both are written into the signed report, so the words an officer copies into a decision are the
words the node signed. Numbers are written with thousands separators in both languages; "以上"
includes the number itself (Civil Code art. 1259), which the rule text says.
"""

from __future__ import annotations

from promotion_tracker.policy import AwardResult, Policy

__all__ = ["award_explanation", "rule_text"]


def _n(value: int) -> str:
    return f"{value:,}"


def _en(value: int, word: str, plural: str | None = None) -> str:
    """``1 registration`` / ``2 registrations``."""
    return f"{value:,} {word if value == 1 else (plural or word + 's')}"


def rule_text(policy: Policy) -> dict[str, str]:
    """Clause 8 with the policy's numbers, in the reading the report uses."""
    p = policy
    zh_base = (
        f"推广应用企业（统计期间内标识注册量不少于 {_n(p.min_enterprise_registrations)} 个的企业）"
        f"达到 {_n(p.base_enterprises)} 家以上，且其标识注册总量达到 {_n(p.base_registrations)} 个以上的，"
        f"给予基础奖励 {_n(p.base_award_yuan)} 元。"
    )
    en_base = (
        f"A promoter whose application enterprises (those with at least "
        f"{_en(p.min_enterprise_registrations, 'registration')} in the period) number "
        f"{_n(p.base_enterprises)} or more and registered "
        f"{_n(p.base_registrations)} or more identifiers in total earns a base award of "
        f"{_n(p.base_award_yuan)} CNY."
    )
    if p.mode == "per_enterprise":
        zh_inc = (
            f"在此基础上（逐家计算口径），每增加一家自身标识注册量达到 {_n(p.increment_registrations)} 个以上的企业，"
            f"奖励 {_n(p.increment_award_yuan)} 元；增量企业的注册量不计入基础条件，"
            f"剩余企业仍须满足 {_n(p.base_enterprises)} 家、{_n(p.base_registrations)} 个的基础条件。"
        )
        en_inc = (
            f"On that basis (per-enterprise reading), each further enterprise with at least "
            f"{_n(p.increment_registrations)} registrations of its own adds {_n(p.increment_award_yuan)} CNY; "
            f"its registrations do not also count toward the base, and the remaining enterprises must still "
            f"meet the base of {_n(p.base_enterprises)} enterprises and {_n(p.base_registrations)} identifiers."
        )
    else:
        zh_inc = (
            f"在此基础上（合并计算口径），增量企业数取“超出 {_n(p.base_enterprises)} 家的企业数”与"
            f"“超出 {_n(p.base_registrations)} 个的注册量每满 {_n(p.increment_registrations)} 个计一家”两者中的较小者，"
            f"每家奖励 {_n(p.increment_award_yuan)} 元。"
        )
        en_inc = (
            f"On that basis (pooled reading), the number of increments is the smaller of the enterprises beyond "
            f"{_n(p.base_enterprises)} and the whole multiples of {_n(p.increment_registrations)} registrations "
            f"beyond {_n(p.base_registrations)}; each adds {_n(p.increment_award_yuan)} CNY."
        )
    zh_cap = f"奖励总额不超过 {_n(p.cap_yuan)} 元。“以上”均含本数。"
    en_cap = f"The award is at most {_n(p.cap_yuan)} CNY. “Or more” includes the number itself."
    return {"zh": zh_base + zh_inc + zh_cap, "en": f"{en_base} {en_inc} {en_cap}"}


def award_explanation(award: AwardResult, policy: Policy, contribution_cap_yuan: int | None) -> dict[str, str]:
    """Why this promoter gets this amount, in words an officer can copy into a decision."""
    p, a = policy, award
    zh = (
        f"有效推广应用企业 {_n(a.eligible_enterprises)} 家（要求 {_n(p.base_enterprises)} 家以上），"
        f"标识注册总量 {_n(a.total_registrations)} 个（要求 {_n(p.base_registrations)} 个以上）"
    )
    en = (
        f"{_en(a.eligible_enterprises, 'eligible enterprise')} ({_n(p.base_enterprises)} or more required) "
        f"registered {_en(a.total_registrations, 'identifier')} ({_n(p.base_registrations)} or more required)"
    )
    if not a.qualified:
        short_zh = []
        short_en = []
        if a.eligible_enterprises < p.base_enterprises:
            short_zh.append(f"企业数尚差 {_n(p.base_enterprises - a.eligible_enterprises)} 家")
            short_en.append(f"{_en(p.base_enterprises - a.eligible_enterprises, 'enterprise')} short")
        if a.total_registrations < p.base_registrations:
            short_zh.append(f"注册量尚差 {_n(p.base_registrations - a.total_registrations)} 个")
            short_en.append(f"{_en(p.base_registrations - a.total_registrations, 'identifier')} short")
        return {
            "zh": f"{zh}，{'、'.join(short_zh)}，未达到基础条件，不予奖励。",
            "en": f"{en}: {' and '.join(short_en)}, so the base condition is not met and no award is due.",
        }
    zh += f"，达到基础条件，基础奖励 {_n(a.base_yuan)} 元。"
    en += f": the base condition is met, base award {_n(a.base_yuan)} CNY."
    if p.mode == "per_enterprise":
        zh += (
            f"按逐家计算口径，另有 {_n(a.increment_enterprises)} 家企业自身标识注册量达到 "
            f"{_n(p.increment_registrations)} 个以上且不计入基础条件，增量奖励 {_n(a.increment_yuan)} 元。"
        )
        one = a.increment_enterprises == 1
        en += (
            f" Under the per-enterprise reading, {_en(a.increment_enterprises, 'further enterprise')} with at "
            f"least {_n(p.increment_registrations)} registrations of {'its' if one else 'their'} own, not counted "
            f"toward the base, add{'s' if one else ''} {_n(a.increment_yuan)} CNY."
        )
    else:
        extra_n = a.eligible_enterprises - p.base_enterprises
        extra_t = a.total_registrations - p.base_registrations
        zh += (
            f"按合并计算口径，超出基础条件的企业 {_n(extra_n)} 家、超出基础注册量 {_n(extra_t)} 个"
            f"（每满 {_n(p.increment_registrations)} 个计一家），计增量企业 {_n(a.increment_enterprises)} 家，"
            f"增量奖励 {_n(a.increment_yuan)} 元。"
        )
        en += (
            f" Under the pooled reading, {_en(extra_n, 'enterprise')} and {_en(extra_t, 'identifier')} beyond the "
            f"base (one increment per {_n(p.increment_registrations)}) give {_en(a.increment_enterprises, 'increment')}"
            f", {_n(a.increment_yuan)} CNY."
        )
    if a.capped_by == "policy_cap":
        zh += f"合计 {_n(a.uncapped_yuan)} 元超过奖励上限 {_n(p.cap_yuan)} 元，按上限计。"
        en += f" The sum of {_n(a.uncapped_yuan)} CNY exceeds the cap of {_n(p.cap_yuan)} CNY, so the cap applies."
    elif a.capped_by == "contribution_cap" and contribution_cap_yuan is not None:
        zh += f"合计 {_n(a.uncapped_yuan)} 元，按第十七条以上年度经济贡献 {_n(contribution_cap_yuan)} 元为限。"
        en += (
            f" The sum of {_n(a.uncapped_yuan)} CNY is limited by clause 17 to the previous-year economic "
            f"contribution of {_n(contribution_cap_yuan)} CNY."
        )
    zh += f"奖励金额 {_n(a.award_yuan)} 元。"
    en += f" Award: {_n(a.award_yuan)} CNY."
    return {"zh": zh, "en": en}
