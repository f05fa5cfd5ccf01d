"""The operator pages' pure parts: the template form's rows read and checked (the registry's own rules,
each problem keyed by its row and input), a template turned back into a form for its next version,
the audit page's filters, and the in-memory record of recent warnings and errors."""

from __future__ import annotations

import logging

from registry.templates import template_from_json
from resolver.console.operator_audit import beijing_time, read_filters
from resolver.console.template_form import form_of_template, read_template_form
from resolver.ops.recent_errors import RecentProblems


def _row(n: int, **values: str) -> dict[str, str]:
    return {f"f{n}-{k}": v for k, v in values.items()}


def test_a_good_template_form_becomes_the_apis_body() -> None:
    post = {
        "id": "cosmetics",
        "description": "化妆品",
        "rows": "3",
        **_row(0, index="2001", name="licence", type="LICENCE", pattern="^[A-Z]{2}[0-9]{6}$", required="on"),
        **_row(1, index="2002", name="shade", type="SHADE", enum="ivory, 象牙白，sand", min="1", max="20"),
        **_row(2, index="", name="", type=""),  # a blank row: left out
    }
    form = read_template_form(post, new=True)
    assert form.ok, form.errors
    assert form.body == {
        "description": "化妆品",
        "fields": [
            {"index": 2001, "name": "licence", "type": "LICENCE", "required": True, "disabled": False,
             "pattern": "^[A-Z]{2}[0-9]{6}$"},
            {"index": 2002, "name": "shade", "type": "SHADE", "required": False, "disabled": False,
             "min_length": 1, "max_length": 20, "enum": ["ivory", "象牙白", "sand"]},
        ],
    }  # fmt: skip
    made = template_from_json(form.body, id="cosmetics", version=1, scope="", previous=None)
    again = form_of_template(made)
    assert [r.values["enum"] for r in again.rows[:2]] == ["", "ivory, 象牙白, sand"]
    assert all(r.kept for r in again.rows[:2]) and again.rows[2].blank()
    assert again.rows[0].flags == {"required": True, "disabled": False}


def test_every_mistake_is_keyed_by_its_row_and_input() -> None:
    post = {
        "id": "bad id",
        "rows": "4",
        **_row(0, index="12", name="licence", pattern="(a+)+"),
        **_row(1, index="2002", name="shade", type="SHADE", min="9", max="3", pattern="[unclosed"),
        **_row(2, index="2002", name="licence", type="X", min="-1"),
        **_row(3, index="99999999999", name="n" * 65, type="T"),
    }
    form = read_template_form(post, new=True)
    assert form.errors == {
        "id": "1–64 letters, digits, '_', '.' or '-', starting with a letter or digit.",
        "f0-index": "A whole number from 2000 up.",
        "f0-type": "This field is required.",
        "f0-pattern": "A repetition inside a repetition, such as (a+)+, can take exponential time.",
        "f1-max": "At least the shortest length.",
        "f1-pattern": "Not a regular expression this node can read.",
        "f2-index": "Another field has it already.",
        "f2-name": "Another field has it already.",
        "f2-min": "A whole number, 0 or more.",
        "f3-index": "A whole number from 2000 up.",
        "f3-name": "Too long.",
    }
    assert read_template_form({"id": "x", "rows": "2"}, new=True).errors == {"rows": "Give at least one field."}
    assert read_template_form({"rows": "999999"}, new=False).errors == {"rows": "Give at least one field."}


def test_the_audit_filters() -> None:
    form, errors, since, before = read_filters({"action": "enterprise.add", "actor": " 300:0.NA/88.118.8 "})
    assert form == {"action": "enterprise.add", "actor": "300:0.NA/88.118.8", "since": ""} and not errors
    assert since is None and before is None
    form, errors, since, before = read_filters({"action": "Bad Action", "since": "2026-12-05", "before": "41"})
    assert set(errors) == {"action"} and since == 1_796_400_000 and before == 41
    assert beijing_time(since) == "2026-12-05 00:00:00"
    for wrong in ("2026-13-01", "20261205", "tomorrow"):
        assert set(read_filters({"since": wrong})[1]) == {"since"}
    for mark in ("0", "-3", "x", "9" * 19):
        assert read_filters({"before": mark})[3] is None


def test_recent_problems_keep_the_newest_warnings_only() -> None:
    kept = RecentProblems(keep=3)
    log = logging.getLogger("idnode.test-recent")
    log.setLevel(logging.DEBUG)
    log.addHandler(kept)
    try:
        log.info("not kept")
        for n in range(5):
            log.warning("problem %d", n)
        log.error("broken %s", "x" * 1000)
    finally:
        log.removeHandler(kept)
    newest = kept.newest()
    assert [p.message[:8] for p in newest] == ["broken x", "problem ", "problem "]
    assert newest[1].message == "problem 4" and len(newest[0].message) == 500
    assert newest[0].level == "ERROR" and newest[0].logger == "idnode.test-recent"
