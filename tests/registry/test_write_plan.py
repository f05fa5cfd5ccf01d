"""The write planner, on its own: current record + request + context → the write, its rights and
what it moves. Pure: no store, no event loop."""

from __future__ import annotations

import pytest

from registry import valuedata
from registry.admin_values import ADMIN_INDEX, DEFAULT_HANDLE_ADMIN_PERMS, SECKEY_INDEX
from registry.auth import Caller, Identity
from registry.errors import (
    HandleAlreadyExists,
    HandleNotFound,
    InvalidValue,
    PermissionDenied,
    ValueAlreadyExists,
    ValuesNotFound,
)
from registry.model import HandleValue, Record, parse_handle
from registry.secretkeys import hash_secret
from registry.stores.base import MUST_NOT_EXIST, HandleWrite
from registry.write_plan import (
    Change,
    Mode,
    PlanContext,
    WritePlan,
    WriteRequest,
    perms_for_change,
    plan_write,
    prepare_values,
)

NOW = 1_760_000_000
ENT = "0.NA/88.118.8.1001"
NODE_KEY = "0.NA/88.118.8"
ENTERPRISE = Caller(identity=Identity(SECKEY_INDEX, ENT, ENT))
NODE_ADMIN = Caller(identity=Identity(SECKEY_INDEX, NODE_KEY, NODE_KEY), node_admin=True)
NAME = parse_handle("88.118.8.1001/SKU-1")


def ctx(caller: Caller = ENTERPRISE, *, max_values: int = 8, default_admin: HandleValue | None = None) -> PlanContext:
    return PlanContext(caller, NOW, max_values, NODE_KEY, default_admin)


def url(index: int = 1, data: str = "https://e.com/1", timestamp: int = 5) -> HandleValue:
    return HandleValue(index, "URL", data.encode(), timestamp=timestamp)


def admin(handle: str = ENT, index: int = ADMIN_INDEX, perms: int = valuedata.ALL_PERMS) -> HandleValue:
    return HandleValue(index, "HS_ADMIN", valuedata.encode_admin(handle, SECKEY_INDEX, perms), timestamp=5)


def record(*values: HandleValue, version: int = 7, handle: str = "88.118.8.1001/SKU-1") -> Record:
    return Record(handle=handle, values=tuple(values), version=version)


def request(mode: Mode, *values: HandleValue, name=NAME, **kw) -> WriteRequest:  # type: ignore[no-untyped-def]
    return WriteRequest(name, mode, tuple(values), **kw)


# -- new handles -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [Mode.CREATE, Mode.REPLACE])
def test_a_new_handle_gets_the_callers_admin_and_every_value_the_write_time(mode: Mode) -> None:
    plan = plan_write(None, request(mode, url(), url(2, "https://e.com/2")), ctx())
    assert plan.change is Change.CREATED and plan.registrations == 1
    assert (plan.key, plan.handle, plan.prefix, plan.expect) == (NAME.key, NAME.text, "88.118.8.1001", MUST_NOT_EXIST)
    assert plan.perms == (valuedata.ADD_HANDLE,)  # on the prefix handle
    assert [v.index for v in plan.values] == [1, 2, ADMIN_INDEX]
    assert {v.timestamp for v in plan.values} == {NOW}
    ref = valuedata.decode_admin(plan.values[-1].data)
    assert (ref.handle, ref.index, ref.perms) == (ENT, SECKEY_INDEX, DEFAULT_HANDLE_ADMIN_PERMS)


def test_a_given_default_admin_is_used_and_a_given_hs_admin_is_kept_alone() -> None:
    theirs = admin("0.NA/88.118.8.2002", perms=valuedata.ADD_VALUE)
    plan = plan_write(None, request(Mode.CREATE, url()), ctx(NODE_ADMIN, default_admin=theirs))
    assert plan.values[-1].data == theirs.data and plan.values[-1].timestamp == NOW
    own = admin(index=300)
    plan = plan_write(None, request(Mode.CREATE, url(), own), ctx())
    assert [v.index for v in plan.values] == [1, 300]  # no default added


def test_the_default_admin_needs_index_100_free() -> None:
    with pytest.raises(InvalidValue, match="index 100, where the default one goes, is taken"):
        plan_write(None, request(Mode.CREATE, url(), url(ADMIN_INDEX)), ctx())


def test_the_value_count_limit_counts_the_default_admin() -> None:
    values = [url(i) for i in range(1, 8)]
    assert len(plan_write(None, request(Mode.CREATE, *values), ctx(max_values=8)).values) == 8
    with pytest.raises(InvalidValue, match="at most 7 values"):
        plan_write(None, request(Mode.CREATE, *values), ctx(max_values=7))


def test_values_are_checked_before_they_are_written() -> None:
    clear = HandleValue(SECKEY_INDEX, "HS_SECKEY", b"plain text secret")
    with pytest.raises(InvalidValue, match="was not hashed"):
        plan_write(None, request(Mode.CREATE, url(), clear), ctx())
    broken = HandleValue(ADMIN_INDEX, "HS_ADMIN", b"\x00")
    with pytest.raises(InvalidValue, match="HS_ADMIN at index 100"):
        plan_write(None, request(Mode.CREATE, url(), broken), ctx())
    hashed = HandleValue(SECKEY_INDEX, "HS_SECKEY", hash_secret("s3cret-s3cret").encode())
    assert plan_write(None, request(Mode.CREATE, hashed), ctx()).values[0].data == hashed.data


def test_only_the_node_administrator_creates_a_prefix_handle() -> None:
    name = parse_handle("0.NA/88.118.8.1001.7")
    with pytest.raises(PermissionDenied, match="creates prefixes"):
        plan_write(None, request(Mode.CREATE, url(), name=name), ctx())
    plan = plan_write(None, request(Mode.CREATE, url(), name=name), ctx(NODE_ADMIN))
    assert plan.prefix == "0.NA" and plan.change is Change.CREATED


def test_create_only_refuses_an_existing_handle_and_a_merge_a_missing_one() -> None:
    with pytest.raises(HandleAlreadyExists):
        plan_write(record(url()), request(Mode.CREATE, url()), ctx())
    with pytest.raises(HandleNotFound):
        plan_write(None, request(Mode.MERGE, url()), ctx())


# -- replacing ---------------------------------------------------------------------------------------
def test_a_replacement_keeps_the_records_administrators() -> None:
    current = record(url(data="https://old"), admin(), admin("0.NA/88.118.8.2002", index=101), version=9)
    plan = plan_write(current, request(Mode.REPLACE, url(data="https://new")), ctx())
    assert plan.change is Change.REPLACED and plan.registrations == 0
    assert (plan.expect, plan.handle) == (9, current.handle)
    assert [(v.index, v.type) for v in plan.values] == [(1, "URL"), (100, "HS_ADMIN"), (101, "HS_ADMIN")]
    assert {v.timestamp for v in plan.values} == {NOW}
    assert plan.perms == (valuedata.MODIFY_VALUE,)


def test_a_replacement_of_an_unadministered_record_gets_the_default_admin_at_a_free_index() -> None:
    current = record(url(), url(ADMIN_INDEX, "https://taken"))
    plan = plan_write(current, request(Mode.REPLACE, url(), url(ADMIN_INDEX, "https://taken")), ctx())
    assert [(v.index, v.type) for v in plan.values] == [(1, "URL"), (100, "URL"), (101, "HS_ADMIN")]
    assert plan.perms == (valuedata.ADD_ADMIN,)


def test_a_replacement_that_takes_the_admins_index_drops_that_admin_and_needs_the_rights_for_it() -> None:
    current = record(url(), admin())
    plan = plan_write(current, request(Mode.REPLACE, url(), url(ADMIN_INDEX, "https://here")), ctx())
    assert [(v.index, v.type) for v in plan.values] == [(1, "URL"), (100, "URL"), (101, "HS_ADMIN")]
    assert plan.perms == tuple(sorted((valuedata.MODIFY_ADMIN, valuedata.ADD_ADMIN)))


# -- index= writes -----------------------------------------------------------------------------------
def test_a_merge_adds_and_replaces_only_the_named_indexes() -> None:
    current = record(url(), url(2, "https://two"), admin())
    plan = plan_write(current, request(Mode.MERGE, url(2, "https://TWO"), url(3, "https://three")), ctx())
    assert [v.index for v in plan.values] == [1, 2, 3, ADMIN_INDEX]
    assert plan.values[1].data == b"https://TWO" and plan.new_index
    assert {v.timestamp for v in plan.values} == {NOW}  # the values kept are written again
    assert plan.perms == tuple(sorted((valuedata.MODIFY_VALUE, valuedata.ADD_VALUE)))
    only = plan_write(current, request(Mode.MERGE, url(2, "https://TWO"), url(3, "x"), indexes=(2,)), ctx())
    assert [v.index for v in only.values] == [1, 2, ADMIN_INDEX] and not only.new_index


def test_a_merge_refuses_a_missing_body_value_and_with_keep_existing_a_taken_index() -> None:
    current = record(url(), admin())
    with pytest.raises(InvalidValue, match="no value in the body for index 5"):
        plan_write(current, request(Mode.MERGE, url(), indexes=(1, 5)), ctx())
    with pytest.raises(ValueAlreadyExists, match="index 1"):
        plan_write(current, request(Mode.MERGE, url(), keep_existing=True), ctx())


def test_a_merge_is_held_to_the_value_count_limit() -> None:
    current = record(*(url(i) for i in range(1, 8)), admin())
    with pytest.raises(InvalidValue, match="at most 8 values"):
        plan_write(current, request(Mode.MERGE, url(9)), ctx())


# -- deleting ----------------------------------------------------------------------------------------
def test_a_delete_removes_the_handle_and_moves_the_counter_back() -> None:
    plan = plan_write(record(url(), admin(), version=4), request(Mode.DELETE), ctx())
    assert (plan.values, plan.expect, plan.change, plan.registrations) == (None, 4, Change.DELETED, -1)
    assert plan.perms == (valuedata.DELETE_HANDLE,)
    with pytest.raises(HandleNotFound):
        plan_write(None, request(Mode.DELETE), ctx())


def test_the_node_prefix_handle_is_never_deleted_and_prefix_handles_only_by_the_node_admin() -> None:
    node = parse_handle(NODE_KEY)
    with pytest.raises(PermissionDenied, match="cannot be deleted"):
        plan_write(record(admin(), handle=NODE_KEY), request(Mode.DELETE, name=node), ctx(NODE_ADMIN))
    prefix = parse_handle(ENT)
    with pytest.raises(PermissionDenied, match="deletes a prefix handle"):
        plan_write(record(admin(), handle=ENT), request(Mode.DELETE, name=prefix), ctx())
    assert plan_write(record(admin(), handle=ENT), request(Mode.DELETE, name=prefix), ctx(NODE_ADMIN)).values is None


def test_deleting_values_keeps_the_others_as_they_were() -> None:
    current = record(url(), url(2), admin())
    plan = plan_write(current, request(Mode.DELETE_VALUES, indexes=(2, 100)), ctx())
    assert plan.values == (url(),)  # untouched, timestamp and all
    assert plan.change is Change.REPLACED
    assert plan.perms == tuple(sorted((valuedata.REMOVE_VALUE, valuedata.REMOVE_ADMIN)))
    with pytest.raises(ValuesNotFound, match="index 9"):
        plan_write(current, request(Mode.DELETE_VALUES, indexes=(1, 9)), ctx())


# -- the plan as data ----------------------------------------------------------------------------------
def test_a_plan_is_a_pure_function_of_its_inputs_and_becomes_one_store_write() -> None:
    current = record(url(), admin())
    req = request(Mode.REPLACE, url(data="https://new"))
    first, second = plan_write(current, req, ctx()), plan_write(current, req, ctx())
    assert first == second and isinstance(first, WritePlan)
    assert current.values == (url(), admin()) and req.values == (url(data="https://new"),)  # inputs untouched
    assert first.write(12) == HandleWrite(NAME.key, current.handle, "88.118.8.1001", first.values, 7, 12)


def test_prepare_values_stamps_without_changing_anything_else() -> None:
    v = HandleValue(4, "EMAIL", b"a@b.c", ttl=60, permissions=0x3, timestamp=1)
    (out,) = prepare_values([v], NOW)
    assert out.timestamp == NOW and (out.index, out.type, out.data, out.ttl, out.permissions) == (
        4,
        "EMAIL",
        b"a@b.c",
        60,
        3,
    )


@pytest.mark.parametrize(
    ("old", "new", "perms"),
    [
        ((), (url(),), [valuedata.ADD_VALUE]),
        ((), (admin(),), [valuedata.ADD_ADMIN]),
        ((url(),), (url(),), []),
        ((url(),), (url(timestamp=99),), []),  # a new timestamp is no change
        ((url(),), (url(data="x"),), [valuedata.MODIFY_VALUE]),
        ((admin(),), (admin(perms=1),), [valuedata.MODIFY_ADMIN]),
        ((url(ADMIN_INDEX),), (admin(),), [valuedata.MODIFY_ADMIN]),  # a value becoming an admin
        ((url(), admin()), (), [valuedata.REMOVE_VALUE, valuedata.REMOVE_ADMIN]),
    ],
)
def test_perms_for_change(old: tuple, new: tuple, perms: list[int]) -> None:  # type: ignore[type-arg]
    assert perms_for_change(old, new) == sorted(perms)
