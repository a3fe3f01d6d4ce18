"""The users use case over in-memory ports: sign-up never tells whether an email is
taken (its owner is mailed instead), login refuses in Binance-style order and records
every attempt, a throttled login touches nothing, a TOTP step and a recovery code are each
good once, a reused refresh token ends its session, and 2FA changes are recorded as the
user."""

from __future__ import annotations

import re

import pyotp
import pytest
from tests.support.memory_accounts import MemoryAccountStore, PlainCipher, RecordingEvents
from tests.support.memory_users import (
    CountingThrottle,
    MemoryUserStore,
    PlainPasswords,
    PlainTokens,
    RecordingMailer,
)

from tradeplane.usecases.accounts import Accounts
from tradeplane.usecases.audit import user_actor
from tradeplane.usecases.errors import Invalid
from tradeplane.usecases.users import (
    TOTP_STEP_S,
    TooManyAttempts,
    Unauthenticated,
    UserRow,
    Users,
)

NOW = 1_700_000_000.0
EMAIL = "ann@example.com"
PASSWORD = "correct horse battery"


class Env:
    def __init__(self) -> None:
        self.now = NOW
        self.store = MemoryUserStore(clock_ms=int(NOW * 1000))
        self.mailer = RecordingMailer()
        self.throttle = CountingThrottle()
        self.accounts_store = MemoryAccountStore()
        accounts = Accounts(self.accounts_store, PlainCipher(), lambda: int(self.now * 1000),
                            RecordingEvents())
        self.users = Users(self.store, self.mailer, PlainCipher(), PlainPasswords(),
                           PlainTokens(), self.throttle, accounts, lambda: self.now)

    def token_in_last_mail(self) -> str:
        found = re.search(r"Your verification token: (\S+)", self.mailer.sent[-1].body)
        assert found is not None, self.mailer.sent[-1]
        return found.group(1)

    async def verified_user(self) -> UserRow:
        await self.users.signup(EMAIL, PASSWORD)
        await self.users.verify_email(self.token_in_last_mail())
        user = await self.store.user_by_email(EMAIL)
        assert user is not None and user.email_verified
        return user

    async def with_2fa(self) -> tuple[UserRow, pyotp.TOTP, list[str]]:
        user = await self.verified_user()
        setup = await self.users.totp_setup(user)
        totp = pyotp.TOTP(setup.secret, interval=TOTP_STEP_S)
        user = await self._reload(user)
        codes = await self.users.totp_enable(user_actor(user.id, "ip"), user,
                                             totp.at(self.now))
        self.now += TOTP_STEP_S  # the enabling code's step is used up
        return await self._reload(user), totp, codes

    async def _reload(self, user: UserRow) -> UserRow:
        fresh = await self.store.user_by_id(user.id)
        assert fresh is not None
        return fresh


async def test_signing_up_with_a_taken_email_answers_the_same_and_mails_its_owner() -> None:
    env = Env()
    await env.users.signup(EMAIL, PASSWORD)
    await env.users.signup(EMAIL.upper(), "another password")  # unverified: a new token
    await env.users.verify_email(env.token_in_last_mail())
    await env.users.signup(EMAIL, "yet another password")  # verified: a notice

    assert len(env.store.users) == 1
    assert [m.subject for m in env.mailer.sent] == [
        "Verify your tradeplane email", "Verify your tradeplane email",
        "Sign-up attempt with your tradeplane email"]
    assert all(m.to == EMAIL for m in env.mailer.sent)
    user = await env.store.user_by_email(EMAIL)
    assert user is not None and user.password_hash == "plain:" + PASSWORD


async def test_a_verification_token_is_good_once() -> None:
    env = Env()
    await env.users.signup(EMAIL, PASSWORD)
    token = env.token_in_last_mail()
    await env.users.verify_email(token)
    with pytest.raises(Invalid, match="invalid, used or expired"):
        await env.users.verify_email(token)


async def test_login_refusals_are_recorded_and_counted_and_a_throttled_one_is_neither(
) -> None:
    env = Env()
    await env.users.signup(EMAIL, PASSWORD)
    with pytest.raises(Unauthenticated, match="Email not verified"):
        await env.users.login(EMAIL, PASSWORD, None, "ip1", "ua")
    with pytest.raises(Unauthenticated, match="Email or password is wrong"):
        await env.users.login(EMAIL, "wrong", None, "ip1", "ua")
    with pytest.raises(Unauthenticated, match="Email or password is wrong"):
        await env.users.login("nobody@example.com", PASSWORD, None, "ip1", "ua")
    await env.users.verify_email(env.token_in_last_mail())
    with pytest.raises(Unauthenticated):
        await env.users.login(EMAIL, "wrong again", None, "ip1", "ua")
    recorded = len(env.store.logins)

    with pytest.raises(TooManyAttempts):  # the third failure of this email here
        await env.users.login(EMAIL, PASSWORD, None, "ip1", "ua")
    issued = await env.users.login(EMAIL, PASSWORD, None, "ip2", "ua")  # another address

    assert [why for *_, why in env.store.logins] == [
        "email not verified", "bad credentials", "bad credentials", "bad credentials", "ok"]
    assert len(env.store.logins) == recorded + 1
    assert issued.access_token.startswith("access:1:")


async def test_a_totp_step_and_a_recovery_code_each_open_one_login() -> None:
    env = Env()
    _, totp, codes = await env.with_2fa()

    with pytest.raises(Unauthenticated, match="Two-factor code required"):
        await env.users.login(EMAIL, PASSWORD, None, "ip", "ua")
    code = totp.at(env.now)
    await env.users.login(EMAIL, PASSWORD, code, "ip", "ua")
    with pytest.raises(Unauthenticated, match="already used"):
        await env.users.login(EMAIL, PASSWORD, code, "ip", "ua")
    await env.users.login(EMAIL, PASSWORD, codes[0].upper(), "ip", "ua")
    with pytest.raises(Unauthenticated, match="not valid"):
        await env.users.login(EMAIL, PASSWORD, codes[0], "ip", "ua")


async def test_enabling_and_disabling_2fa_is_recorded_as_the_user() -> None:
    env = Env()
    user, totp, _ = await env.with_2fa()
    with pytest.raises(Invalid, match="already enabled"):
        await env.users.totp_setup(user)

    await env.users.totp_disable(user_actor(user.id, "198.51.100.4"), user, totp.at(env.now))

    records = [(r.actor, r.role, r.action, r.target, r.after)
               for r in env.accounts_store.state.audit]
    assert records == [("user:1", "User", "user.2fa.enable", "user:1", {"twoFactor": True}),
                       ("user:1", "User", "user.2fa.disable", "user:1", {"twoFactor": False})]
    assert env.accounts_store.state.audit[-1].ip == "198.51.100.4"
    assert not (await env._reload(user)).totp_enabled


async def test_a_wrong_first_code_leaves_2fa_off_and_unrecorded() -> None:
    env = Env()
    user = await env.verified_user()
    await env.users.totp_setup(user)
    user = await env._reload(user)

    with pytest.raises(Unauthenticated, match="not valid"):
        await env.users.totp_enable(user_actor(user.id, "ip"), user, "000000x")

    assert not (await env._reload(user)).totp_enabled
    assert env.accounts_store.state.audit == []


async def test_a_refresh_token_presented_twice_ends_its_session() -> None:
    env = Env()
    await env.verified_user()
    first = await env.users.login(EMAIL, PASSWORD, None, "ip", "ua")
    second = await env.users.refresh(first.refresh_token)
    session_id = first.access_token.split(":")[2]
    assert second.access_token.split(":")[2] == session_id

    with pytest.raises(Unauthenticated, match="reused"):
        await env.users.refresh(first.refresh_token)
    with pytest.raises(Unauthenticated, match="invalid or expired"):
        await env.users.refresh(second.refresh_token)  # the session is over
    with pytest.raises(Unauthenticated, match="Session ended"):
        await env.users.session_user(session_id, 1)


async def test_2fa_is_asked_only_of_users_who_enabled_it() -> None:
    env = Env()
    plain = await env.verified_user()
    await env.users.require_2fa(plain, None)
    await env.users.require_2fa_for_account(424242, None)  # no user: an admin's account

    env2 = Env()
    user, totp, _ = await env2.with_2fa()
    with pytest.raises(Unauthenticated, match="required"):
        await env2.users.require_2fa_for_account(user.account, None)
    await env2.users.require_2fa_for_account(user.account, totp.at(env2.now))
