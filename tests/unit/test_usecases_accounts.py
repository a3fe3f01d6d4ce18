"""The accounts use cases over in-memory ports: freezing is recorded once and only when
it changes something and reaches the gateways; a user's own keys are recorded as the user
and only their own can be revoked; a refused change leaves no record; the reads the
admin API answers with say NotFound where it answers 404."""

from __future__ import annotations

import pytest
from tests.support.memory_accounts import MemoryAccountStore, PlainCipher, RecordingEvents

from tradeplane.domain.access import AdminAction, Role
from tradeplane.usecases.accounts import (
    USER_KEY_CREATE,
    USER_KEY_REVOKE,
    Accounts,
    KeyRequest,
    admin_token_hash,
)
from tradeplane.usecases.audit import Actor, user_actor
from tradeplane.usecases.errors import Invalid, NotFound, NotRequired

ADMIN = Actor("admin", "ops", Role.OPERATOR, "192.0.2.1")


def _cases() -> tuple[Accounts, MemoryAccountStore, RecordingEvents]:
    store, events = MemoryAccountStore(), RecordingEvents()
    return Accounts(store, PlainCipher(), lambda: 1_700_000_000_000, events), store, events


async def test_freezing_records_before_and_after_once_and_tells_the_gateways() -> None:
    cases, store, events = _cases()
    account = await cases.create_user(ADMIN, "alice")
    store.state.audit.clear()

    after = await cases.set_frozen(ADMIN, account, "chargeback")
    again = await cases.set_frozen(ADMIN, account, "another reason")

    assert after["frozen"] is True and after["frozenReason"] == "chargeback"
    assert again == after  # already frozen: nothing changes
    [rec] = store.state.audit
    assert (rec.actor, rec.role, rec.action, rec.target) == (
        "admin:ops", "Operator", AdminAction.USER_FREEZE, f"account:{account}")
    assert rec.before["frozen"] is False and rec.after == after
    assert events.told == [("account", account)]


async def test_unfreezing_is_its_own_action_and_a_no_op_when_not_frozen() -> None:
    cases, store, events = _cases()
    account = await cases.create_user(ADMIN, "bob")
    await cases.set_frozen(ADMIN, account, None)
    assert [r.action for r in store.state.audit] == [AdminAction.ACCOUNT_CREATE]

    await cases.set_frozen(ADMIN, account, "review")
    after = await cases.set_frozen(ADMIN, account, None)

    assert after["frozen"] is False
    assert store.state.audit[-1].action == AdminAction.USER_UNFREEZE
    assert events.told == [("account", account), ("account", account)]


async def test_only_user_accounts_can_be_frozen() -> None:
    cases, store, events = _cases()
    account = await cases.create_user(ADMIN, "fees")
    store.state.accounts[account].kind = "system"
    audited = len(store.state.audit)

    with pytest.raises(NotFound):
        await cases.set_frozen(ADMIN, account, "no")
    with pytest.raises(NotFound):
        await cases.set_frozen(ADMIN, 999_999, "no")
    assert len(store.state.audit) == audited and events.told == []


async def test_a_users_own_key_is_recorded_as_that_user_without_its_secret() -> None:
    cases, store, _ = _cases()
    account = await cases.create_user(ADMIN, "carol")
    user = user_actor(7, "198.51.100.9")

    rec, secret = await cases.create_own_key(user, account, KeyRequest(label="bot"))

    assert secret is not None and store.state.keys[rec.api_key].secret_enc == \
        b"enc:" + secret.encode()
    last = store.state.audit[-1]
    assert (last.actor, last.role, last.action, last.target, last.ip) == (
        "user:7", "User", USER_KEY_CREATE, f"apikey:{rec.api_key}", "198.51.100.9")
    assert last.before is None and last.after["label"] == "bot"
    assert secret not in repr(last.after)


async def test_a_refused_key_leaves_no_key_and_no_record() -> None:
    cases, store, _ = _cases()
    account = await cases.create_user(ADMIN, "dave")
    audited = len(store.state.audit)

    with pytest.raises(NotRequired):
        await cases.create_own_key(user_actor(1, "ip"), account,
                                   KeyRequest(public_key="not for HMAC"))
    with pytest.raises(Invalid):
        await cases.create_own_key(user_actor(1, "ip"), account,
                                   KeyRequest(permissions=("fly",)))

    assert store.state.keys == {} and len(store.state.audit) == audited


async def test_a_user_revokes_only_their_own_live_keys() -> None:
    cases, store, events = _cases()
    mine = await cases.create_user(ADMIN, "erin")
    theirs = await cases.create_user(ADMIN, "frank")
    rec, _ = await cases.create_key(ADMIN, theirs, KeyRequest())
    user = user_actor(3, "ip")

    with pytest.raises(NotFound):
        await cases.revoke_own_key(user, mine, rec.api_key)
    assert await store.live_key(rec.api_key) is not None

    after = await cases.revoke_own_key(user, theirs, rec.api_key)
    assert after["revoked"] is True and await store.live_key(rec.api_key) is None
    assert store.state.audit[-1].action == USER_KEY_REVOKE
    assert store.state.audit[-1].before["revoked"] is False
    assert events.told == [("key", rec.api_key)]
    with pytest.raises(NotFound):  # not live any more
        await cases.revoke_own_key(user, theirs, rec.api_key)


async def test_reads_say_not_found_where_the_admin_api_answers_404() -> None:
    cases, _, _ = _cases()
    account = await cases.create_user(ADMIN, "grace@example.com")

    assert (await cases.account(account))["name"] == "grace@example.com"
    assert await cases.account_of_email("Grace@Example.com") == account
    with pytest.raises(NotFound):
        await cases.account(424242)
    with pytest.raises(NotFound):
        await cases.account_of_email("nobody@example.com")


async def test_an_admin_token_is_found_by_its_hash_only() -> None:
    cases, store, _ = _cases()
    token = await cases.create_admin(ADMIN, "helpdesk", Role.SUPPORT)

    assert admin_token_hash(token) in store.state.admins
    assert await cases.admin_of_token(token) == ("helpdesk", Role.SUPPORT)
    assert await cases.admin_of_token(token + "x") is None


async def test_a_change_made_elsewhere_is_recorded_once_with_its_actor() -> None:
    cases, store, _ = _cases()

    rec = await cases.record(user_actor(9, "203.0.113.5"), "user.2fa.enable", "user:9",
                             None, {"twoFactor": True})

    assert store.state.audit == [rec]
    assert (rec.actor, rec.role, rec.ip) == ("user:9", "User", "203.0.113.5")
    [entry] = await cases.audit_log(from_id=1, limit=10, actor="user:9")
    assert entry["after"] == {"twoFactor": True}
