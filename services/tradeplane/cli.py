"""The ``tradeplane`` command: one subcommand per process, plus admin and dev tools."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets as _stdlib_secrets
import shlex
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from tradeplane.config import Settings
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.escrow import DealState
from tradeplane.platform.discovery import (
    DATA_DIR_ENV,
    DiscoveryError,
    Located,
    Source,
    check_data_dir_text,
    locate,
)
from tradeplane.secretsource import Loaded, SecretSourceError, load_settings

if TYPE_CHECKING:
    from tradeplane.adapters.bus import Bus
    from tradeplane.adapters.db import Pool
    from tradeplane.domain.custody import WalletSpec
    from tradeplane.usecases.accounts import Accounts, KeyEvents
    from tradeplane.usecases.pairs import Pairs
    from tradeplane.wallets.settings import WalletSettings

def _settings(args: argparse.Namespace) -> Settings:
    return _loaded(args).settings


class PlatformUnreachable(Unavailable):
    """A server of the platform the command found does not answer."""


def _data_dir_arg(text: str) -> str:
    """argparse type of ``--data-dir``: a bounded path."""
    try:
        return check_data_dir_text(text)
    except DiscoveryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flag_data_dir(args: argparse.Namespace) -> str | None:
    """``--data-dir`` after the subcommand, else before it (``tradeplane --data-dir X ...``)."""
    given: str | None = getattr(args, "platform_dir", None) or getattr(
        args, "global_data_dir", None)
    return given


def _locate(args: argparse.Namespace) -> Located:
    """The platform this command uses (``platform/discovery.py`` says in which order),
    remembered on ``args`` for the error messages.

    Raises:
        DiscoveryError: none found.
    """
    found: Located | None = getattr(args, "located", None)
    if found is None:
        try:
            home = Path.home()
        except RuntimeError:  # no HOME and no passwd entry: no state pointer either
            home = Path("/nonexistent")
        found = locate(_flag_data_dir(args), os.environ, Path.cwd().absolute(), home)
        args.located = found
    return found


def _loaded(args: argparse.Namespace) -> Loaded:
    """Settings from the environment, Vault or secret files (``secretsource``), or those of
    the local platform (``tradeplane up``) found by :func:`_locate`.

    Raises:
        DiscoveryError: no platform found (``--dev`` without one: the defaults are used).
    """
    overrides: dict[str, Any] = {}
    dev = getattr(args, "dev", False)
    if dev:
        overrides["dev_mode"] = True
    try:
        found = _locate(args)
    except DiscoveryError:
        if not dev or _flag_data_dir(args) is not None or DATA_DIR_ENV in os.environ:
            raise
        found = Located(Source.ENV_SETTINGS, None)
        args.located = found
    if found.data_dir is not None:
        from tradeplane.platform.local import client_overrides

        try:
            overrides.update(client_overrides(found.data_dir))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DiscoveryError(f"cannot read the platform's files in {found.data_dir}: "
                                 f"{exc}") from exc
    return load_settings(overrides)


def _unreachable(args: argparse.Namespace, what: str, url: str) -> PlatformUnreachable:
    parts = urlsplit(url)
    where = f"{parts.hostname or '?'}:{parts.port or '?'}"
    found: Located | None = getattr(args, "located", None)
    if found is not None and found.source is Source.ENV_SETTINGS:
        hint = "(the TRADEPLANE_* settings in the environment name it)"
    else:
        hint = f"(or pass --data-dir / set {DATA_DIR_ENV})"
    return PlatformUnreachable(
        f"cannot reach the platform's {what} at {where} — is `tradeplane up` running? {hint}")


async def _db_pool(args: argparse.Namespace, settings: Settings | None = None) -> Pool:
    """A small pool on the platform's database.

    Raises:
        PlatformUnreachable: nothing answers at its address.
        DatabaseError: it answered but refused (a wrong password, say).
    """
    from tradeplane.adapters import db

    url = (settings or _settings(args)).database_url
    try:
        return await db.create_pool(url, 2)
    except db.DatabaseError as exc:
        if isinstance(exc.__cause__, OSError):
            raise _unreachable(args, "database (PostgreSQL)", url) from exc
        raise


async def _bus(args: argparse.Namespace) -> Bus:
    """The platform's NATS, connected once it is known to answer (the client itself would
    retry an absent server forever).

    Raises:
        PlatformUnreachable: nothing answers at its address.
    """
    from tradeplane.adapters.bus import Bus

    url = _settings(args).nats_url
    parts = urlsplit(url)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222), 5.0)
    except (OSError, ValueError) as exc:
        raise _unreachable(args, "NATS", url) from exc
    writer.close()
    return await Bus.connect(url, name="cli")


def _run_async(fn: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return asyncio.run(fn())


# ----------------------------------------------------------------- processes
def cmd_gateway(args: argparse.Namespace) -> int:
    from tradeplane.runner import run_service
    from tradeplane.services import run_gateway

    loaded = _loaded(args)
    s = loaded.settings
    return run_service("gateway", s, lambda stop: run_gateway(s, stop), metrics=False,
                       vault=loaded.vault)


def cmd_matching(args: argparse.Namespace) -> int:
    from tradeplane.runner import run_service
    from tradeplane.services import run_matching

    loaded = _loaded(args)
    s = loaded.settings
    return run_service(
        "matching", s,
        lambda stop: run_matching(s, args.symbol, stop, args.rules or None,
                                  standby=args.standby),
        vault=loaded.vault,
    )


def cmd_settlement(args: argparse.Namespace) -> int:
    from tradeplane.runner import run_service
    from tradeplane.services import run_settlement

    loaded = _loaded(args)
    s = loaded.settings
    return run_service("settlement", s, lambda stop: run_settlement(s, stop),
                       vault=loaded.vault)


def cmd_marketdata(args: argparse.Namespace) -> int:
    from tradeplane.runner import run_service
    from tradeplane.services import run_marketdata

    loaded = _loaded(args)
    s = loaded.settings
    return run_service("marketdata", s, lambda stop: run_marketdata(s, stop),
                       vault=loaded.vault)


def cmd_hedger(args: argparse.Namespace) -> int:
    from tradeplane.runner import run_service
    from tradeplane.services import run_hedger

    loaded = _loaded(args)
    s = loaded.settings
    return run_service("hedger", s, lambda stop: run_hedger(s, stop), vault=loaded.vault)


def cmd_rates(args: argparse.Namespace) -> int:
    from tradeplane.runner import run_service
    from tradeplane.services import run_rates

    loaded = _loaded(args)
    s = loaded.settings
    return run_service("rates", s, lambda stop: run_rates(s, stop), vault=loaded.vault)


def cmd_wallet_watcher(args: argparse.Namespace) -> int:
    from tradeplane.runner import run_service
    from tradeplane.wallets.service import run_wallet_watcher
    from tradeplane.wallets.settings import WalletConfigError, load_wallet_settings

    loaded = _loaded(args)
    s = loaded.settings
    ws = load_wallet_settings()
    try:
        return run_service(
            "wallet-watcher", s,
            lambda stop: run_wallet_watcher(s, ws, args.wallet, stop, loaded.vault),
            vault=loaded.vault,
        )
    except WalletConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def cmd_marketmaker(args: argparse.Namespace) -> int:
    from tradeplane.demo.marketmaker import MissingSecretError, api_secret, run_market_maker

    try:
        secret = api_secret(os.environ)
    except MissingSecretError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return _run_async(lambda: run_market_maker(
        args.url, args.api_key, secret, args.symbols, args.interval
    ))


def cmd_up(args: argparse.Namespace) -> int:
    from tradeplane.platform.local import run_local_platform

    return run_local_platform(
        data_dir=args.data_dir, http_port=args.port, market_maker=not args.no_market_maker,
        chains=not args.no_chains, observability=args.observability,
    )


# ----------------------------------------------------------------- admin
# The admin commands are the admin API's use cases (``usecases/pairs.py``,
# ``usecases/accounts.py``) acting as ``cli:<os user>`` with the SuperAdmin role (whoever
# holds the database credentials holds every power): the same rules, the same audit
# records. The composition root of each command is the ``_*_cases`` helper it uses.
def _account_cases(args: argparse.Namespace, pool: Pool,
                         settings: Settings | None = None, *,
                         events: KeyEvents | None = None) -> Accounts:
    from tradeplane.adapters.admin_store import PgAccountStore
    from tradeplane.adapters.cipher import SecretCipher
    from tradeplane.adapters.control import now_ms
    from tradeplane.usecases.accounts import Accounts

    # API secrets are encrypted with secret_key: never with the placeholder outside dev mode.
    s = (settings or _settings(args)).for_process("cli-accounts")
    return Accounts(PgAccountStore(pool), SecretCipher(s.secret_key.get_secret_value()),
                    now_ms, events)


async def _pair_cases(args: argparse.Namespace, bus: Bus, pool: Pool) -> Pairs:
    from tradeplane.adapters.admin_store import PgPairStore
    from tradeplane.adapters.control import (
        BusBroadcasts,
        BusCommandLog,
        LocalPairControl,
        now_ms,
    )
    from tradeplane.usecases.pairs import PairControl, Pairs

    s = _settings(args)
    control: PairControl
    if s.pair_control == "kubernetes":
        from tradeplane.adapters.kube_pairs import KubePairs

        control = await asyncio.to_thread(KubePairs, s.kube_namespace)
    else:
        control = LocalPairControl(bus)
    return Pairs(PgPairStore(pool), control, BusCommandLog(bus), BusBroadcasts(bus), now_ms)


def cmd_pair_trading(args: argparse.Namespace) -> int:
    """Halt, resume or set cancel-only without a restart, as ``PUT
    /admin/pairs/{symbol}/trading`` does: SetTrading on the symbol's log (or the
    TradingPair patched, under the operator), the pairs table, the audit log; while the
    kill switch is on, only the state the pair returns to when it is lifted."""
    from tradeplane.domain.pairs import normalize_symbol
    from tradeplane.usecases.audit import cli_actor

    symbol = normalize_symbol(args.symbol)
    return _run_async(lambda: _over_pairs(
        args, lambda cases: cases.set_trading(cli_actor(), symbol, args.state)))


async def _over_pairs(args: argparse.Namespace,
                      act: Callable[[Pairs], Coroutine[Any, Any, dict[str, Any]]]) -> int:
    """Run one pairs use case against the platform and print its answer: exit 2 for a
    refusal (no such pair, an invalid value), 1 when an engine or the TradingPair did not
    take it."""
    from tradeplane.usecases.errors import Invalid, NotFound, Unavailable

    bus = await _bus(args)
    try:
        pool = await _db_pool(args)
        try:
            after = await act(await _pair_cases(args, bus, pool))
        except (NotFound, Invalid) as exc:
            print(f"{exc}", file=sys.stderr)
            return 2
        except Unavailable as exc:
            print(f"not taken: {exc}", file=sys.stderr)
            return 1
        finally:
            await pool.close()
    finally:
        await bus.close()
    print(json.dumps(after))
    return 0


def cmd_pair_fees(args: argparse.Namespace) -> int:
    """New maker/taker fees of a pair (parts per million), as ``PUT
    /admin/pairs/{symbol}/fees``: the pairs table (and the TradingPair, under the
    operator), the audit log; settlement reloads the pair on ``control.pairs``."""
    from tradeplane.domain.pairs import normalize_symbol
    from tradeplane.usecases.audit import cli_actor

    symbol = normalize_symbol(args.symbol)
    return _run_async(lambda: _over_pairs(args, lambda cases: cases.set_fees(
        cli_actor(), symbol, args.maker_fee_ppm, args.taker_fee_ppm)))


def cmd_kill_switch(args: argparse.Namespace) -> int:
    """The global kill switch, as ``/admin/kill-switch``: ``on`` halts every pair (the
    gateways refuse trading at once, every engine gets SetTrading(HALTED)), keeping each
    pair's state; ``off`` restores them; ``status`` shows it."""
    from tradeplane.usecases.audit import cli_actor

    if args.action == "on":
        return _run_async(lambda: _over_pairs(
            args, lambda cases: cases.kill_switch_on(cli_actor(), args.reason)))
    if args.action == "off":
        return _run_async(lambda: _over_pairs(
            args, lambda cases: cases.kill_switch_off(cli_actor())))
    return _run_async(lambda: _over_pairs(args, lambda cases: cases.kill_switch_state()))


def cmd_user_freeze(args: argparse.Namespace) -> int:
    """Freeze (``--reason``) or unfreeze (``--unfreeze``) a user's account, as ``POST
    /admin/users/{account}/freeze`` / ``unfreeze``: its keys may still read, but neither
    trade nor withdraw; the gateways drop its keys at once."""
    from tradeplane.adapters.control import BusBroadcasts
    from tradeplane.usecases.audit import cli_actor
    from tradeplane.usecases.errors import NotFound

    if args.unfreeze == bool(args.reason):
        print("give either --reason (freeze) or --unfreeze", file=sys.stderr)
        return 2

    async def go() -> int:
        bus = await _bus(args)
        try:
            pool = await _db_pool(args)
            try:
                cases = _account_cases(args, pool, events=BusBroadcasts(bus))
                account = await cases.account_of(args.user)
                after = await cases.set_frozen(cli_actor(), account,
                                               None if args.unfreeze else args.reason)
            except NotFound as exc:
                print(f"{exc}", file=sys.stderr)
                return 2
            finally:
                await pool.close()
        finally:
            await bus.close()
        print(json.dumps(after))
        return 0

    return _run_async(go)


def cmd_migrate(args: argparse.Namespace) -> int:
    from tradeplane.adapters import db

    async def go() -> int:
        pool = await _db_pool(args)
        try:
            applied = await db.migrate(pool)
        finally:
            await pool.close()
        print(json.dumps({"applied": applied}))
        return 0

    return _run_async(go)


def cmd_pair_add(args: argparse.Namespace) -> int:
    from tradeplane.adapters import db
    from tradeplane.domain.money import to_units
    from tradeplane.domain.pairs import DEMO_PAIRS, PairConfigError, PairRules

    async def go() -> int:
        if args.demo:
            pairs = list(DEMO_PAIRS)
        else:
            base, _, quote = args.symbol.upper().partition("-")
            if not quote:
                print("symbol must be BASE-QUOTE, e.g. BTC-USDT", file=sys.stderr)
                return 2
            try:
                pairs = [PairRules(
                    base=base, quote=quote, tick=to_units(args.tick), lot=to_units(args.lot),
                    min_qty=to_units(args.min_qty or args.lot), max_qty=to_units(args.max_qty),
                    min_notional=to_units(args.min_notional),
                    maker_fee_ppm=args.maker_fee_ppm, taker_fee_ppm=args.taker_fee_ppm,
                )]
            except (PairConfigError, ValueError) as exc:
                print(f"invalid pair: {exc}", file=sys.stderr)
                return 2
        pool = await _db_pool(args)
        try:
            for p in pairs:
                await db.upsert_pair(pool, p)
                print(json.dumps({"pair": p.name, "symbol": p.symbol}))
        finally:
            await pool.close()
        return 0

    return _run_async(go)


def cmd_user_create(args: argparse.Namespace) -> int:
    """A user account (recorded when new), as ``POST /admin/users``."""
    from tradeplane.usecases.audit import cli_actor

    async def go() -> int:
        pool = await _db_pool(args)
        try:
            cases = _account_cases(args, pool)
            account = await cases.create_user(cli_actor(), args.name)
        finally:
            await pool.close()
        print(json.dumps({"account": account, "name": args.name}))
        return 0

    return _run_async(go)


def cmd_key_create(args: argparse.Namespace) -> int:
    """An API key for a user (HMAC: the secret is printed once; ED25519: the user's
    public key is registered, there is no secret), as ``POST /admin/api-keys``."""
    from tradeplane.gateway import apikeys
    from tradeplane.usecases.audit import cli_actor
    from tradeplane.usecases.errors import Invalid, NotFound

    try:
        spec = apikeys.KeySpec(
            permissions=[p.strip() for p in args.permissions.split(",") if p.strip()],
            keyType=args.type,
            publicKey=Path(args.public_key_file).read_text() if args.public_key_file else "",
            ipAllowList=[a.strip() for a in args.ip_allow.split(",") if a.strip()],
            expiresInDays=args.expires_days, label=args.label,
        )
    except (ValidationError, OSError) as exc:
        print(f"invalid key: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        s = _settings(args)
        pool = await _db_pool(args, s)
        try:
            cases = _account_cases(args, pool, s)
            account = await cases.account_of(args.user)
            rec, secret = await cases.create_key(cli_actor(), account,
                                                 apikeys.key_request(spec))
        except NotFound as exc:
            print(f"{exc}", file=sys.stderr)
            return 2
        except Invalid as exc:
            print(f"invalid key: {exc}", file=sys.stderr)
            return 2
        finally:
            await pool.close()
        print(json.dumps(apikeys.created_json(rec, secret)))
        return 0

    return _run_async(go)


def cmd_key_revoke(args: argparse.Namespace) -> int:
    """Revoke an API key, as ``DELETE /admin/api-keys/{key}``: audited, and the gateways,
    told over the bus, stop accepting it at once."""
    from tradeplane.adapters.control import BusBroadcasts
    from tradeplane.usecases.audit import cli_actor
    from tradeplane.usecases.errors import NotFound

    async def go() -> int:
        bus = await _bus(args)
        try:
            pool = await _db_pool(args)
            try:
                cases = _account_cases(args, pool, events=BusBroadcasts(bus))
                await cases.revoke_key(cli_actor(), args.api_key)
            except NotFound:
                print("no such live API key", file=sys.stderr)
                return 2
            finally:
                await pool.close()
        finally:
            await bus.close()
        print(json.dumps({"apiKey": args.api_key, "revoked": True}))
        return 0

    return _run_async(go)


def cmd_admin_create(args: argparse.Namespace) -> int:
    """An admin identity with a role, as ``POST /admin/admins``; its bearer token is
    printed once (stored hashed)."""
    from tradeplane.domain.access import Role
    from tradeplane.usecases.accounts import BOOTSTRAP
    from tradeplane.usecases.audit import cli_actor
    from tradeplane.usecases.errors import Conflict

    if args.name == BOOTSTRAP:
        print(f"{BOOTSTRAP} is the TRADEPLANE_ADMIN_TOKEN identity", file=sys.stderr)
        return 2

    async def go() -> int:
        pool = await _db_pool(args)
        try:
            cases = _account_cases(args, pool)
            token = await cases.create_admin(cli_actor(), args.name, Role(args.role))
        except Conflict:
            print(f"an admin named {args.name} exists", file=sys.stderr)
            return 2
        finally:
            await pool.close()
        print(json.dumps({"name": args.name, "role": args.role, "token": token}))
        return 0

    return _run_async(go)


def cmd_credit(args: argparse.Namespace) -> int:
    """Credit funds to a user, as ``POST /admin/credit`` (idempotent by ``--ref``,
    recorded once)."""
    from tradeplane.domain.money import AmountError, plain_to_units
    from tradeplane.usecases.audit import cli_actor
    from tradeplane.usecases.errors import NotFound

    try:
        units = plain_to_units(args.amount)
    except AmountError as exc:
        print(f"invalid amount: {exc}", file=sys.stderr)
        return 2
    if units <= 0:
        print("amount must be positive", file=sys.stderr)
        return 2

    async def go() -> int:
        pool = await _db_pool(args)
        try:
            cases = _account_cases(args, pool)
            account = await cases.account_of(args.user)
            ref = args.ref or _stdlib_secrets.token_hex(8)
            applied = await cases.credit(cli_actor(), account, args.asset.upper(), units, ref)
        except NotFound as exc:
            print(f"{exc}", file=sys.stderr)
            return 2
        finally:
            await pool.close()
        print(json.dumps({"applied": applied, "ref": ref}))
        return 0

    return _run_async(go)


def cmd_check_ledger(args: argparse.Namespace) -> int:
    from tradeplane.adapters import db
    from tradeplane.domain.money import fmt_units

    async def go() -> int:
        pool = await _db_pool(args)
        try:
            checks, problems = await db.check_invariants(pool)
        finally:
            await pool.close()
        for c in checks:
            print(f"{c.asset:8} balances {fmt_units(c.balances_total):>24}  "
                  f"external net {fmt_units(c.external_net):>24}  {'ok' if c.ok else 'MISMATCH'}")
        for p in problems:
            print(f"VIOLATION: {p}")
        print("ledger OK" if not problems else f"ledger BROKEN ({len(problems)} problems)")
        return 0 if not problems else 1

    return _run_async(go)


def cmd_wallet_add(args: argparse.Namespace) -> int:
    """Register (or update) a wallet locally, as the operator does from a Wallet resource."""
    from tradeplane.adapters import wallets_db
    from tradeplane.domain.custody import WalletSpecError, wallet_from_spec

    rpc: dict[str, Any] = {"url": args.rpc_url}
    for key, value in (("vaultPath", args.vault_path), ("wallet", args.rpc_wallet),
                       ("daemonUrl", args.daemon_url)):
        if value:
            rpc[key] = value
    if args.account_index:
        rpc["accountIndex"] = args.account_index
    doc: dict[str, Any] = {
        "chain": args.chain, "network": args.network, "asset": args.asset.upper(), "rpc": rpc,
        "confirmations": args.confirmations,
        "hotWallet": {"minBalance": args.hot_min,
                      **({"maxBalance": args.hot_max} if args.hot_max else {})},
        "withdrawals": {"fee": args.withdraw_fee, "min": args.withdraw_min,
                        "approvalThreshold": args.approval_threshold,
                        "whitelistRequired": args.whitelist_required},
    }
    try:
        spec = wallet_from_spec(args.name, doc)
    except WalletSpecError as exc:
        print(f"invalid wallet: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        loaded = _loaded(args)
        pool = await _db_pool(args, loaded.settings)
        try:
            await wallets_db.upsert_wallet(pool, spec)
        finally:
            await pool.close()
        print(json.dumps({"wallet": spec.name, "spec": spec.to_spec()}))
        trouble = await _node_trouble(args, loaded, spec)
        if trouble:
            # Registered all the same: a node may come up after its wallet is declared.
            print(f"warning: wallet {spec.name} is registered but its node does not answer "
                  f"now ({trouble}); its watcher will keep retrying", file=sys.stderr)
        return 0

    return _run_async(go)


#: How long ``wallet-add`` waits for the node's first answer.
_NODE_PROBE_S = 5.0


async def _node_trouble(args: argparse.Namespace, loaded: Loaded, spec: WalletSpec
                        ) -> str | None:
    """Why the wallet's node does not answer its tip now (None: it does)."""
    from tradeplane.wallets.chain import ChainError
    from tradeplane.wallets.service import connect_chain
    from tradeplane.wallets.settings import WalletConfigError, node_login

    try:
        chain = connect_chain(spec, await node_login(spec, _wallet_settings(args, loaded),
                                                     loaded.vault))
    except WalletConfigError as exc:
        return str(exc)
    try:
        await asyncio.wait_for(chain.tip(), _NODE_PROBE_S)
    except ChainError as exc:
        return str(exc)
    except TimeoutError:
        return f"no answer within {_NODE_PROBE_S:.0f} s"
    finally:
        await chain.close()
    return None


def cmd_check_wallets(args: argparse.Namespace) -> int:
    """Each wallet's reconciliation (the watcher's last, or ``--live`` now against the
    node), open reorganisation adjustments and custody's ledger invariants. A wallet never
    reconciled, or whose node does not answer ``--live``, is not "OK": exit 1."""
    from tradeplane.adapters import wallets_db
    from tradeplane.domain.money import fmt_units

    async def go() -> int:
        loaded = _loaded(args)
        pool = await _db_pool(args, loaded.settings)
        bad = unchecked = 0
        try:
            specs = [w for w in await wallets_db.wallets(pool)
                     if not args.wallet or w.name == args.wallet]
            if args.wallet and not specs:
                print(f"tradeplane check-wallets: no wallet named {args.wallet}",
                      file=sys.stderr)
                return 2
            if not specs:
                print("no wallets configured (tradeplane wallet-add, or tradeplane up with "
                      "Debian's litecoind or monero installed)")
            if args.live:
                failed, unchecked = await _reconcile_live(args, loaded, pool, specs)
                bad += failed
            else:
                rows = {r["wallet"]: r for r in await wallets_db.reconciliations(pool)}
                for spec in specs:
                    r = rows.get(spec.name)
                    if r is None:
                        unchecked += 1
                        print(f"{spec.name:16} {spec.asset:6} never reconciled (is "
                              f"`tradeplane wallet-watcher --wallet {spec.name}` running? "
                              "--live asks the node now)")
                        continue
                    print(f"{r['wallet']:16} {r['asset']:6} holdings "
                          f"{fmt_units(r['holdings']):>22} liabilities "
                          f"{fmt_units(r['liabilities']):>22} difference "
                          f"{fmt_units(r['difference']):>22}  "
                          f"{'ok' if r['ok'] else 'SHORTFALL'}  "
                          f"at {r['checked_at']:%Y-%m-%d %H:%M:%S}")
                    bad += 0 if r["ok"] else 1
            for a in await wallets_db.open_adjustments(pool, args.wallet or None):
                print(f"OPEN ADJUSTMENT {a['id']}: {a['wallet']} {a['kind']}: {a['detail']}")
                bad += 1
            for p in await wallets_db.custody_problems(pool):
                print(f"VIOLATION: {p}")
                bad += 1
        finally:
            await pool.close()
        if bad:
            print(f"wallets NEED ATTENTION ({bad})")
        elif unchecked:
            print(f"wallets NOT CHECKED ({unchecked} not reconciled)")
        else:
            print("wallets OK" if specs else "no wallets to check")
        return 0 if not (bad or unchecked) else 1

    return _run_async(go)


def _wallet_settings(args: argparse.Namespace, loaded: Loaded) -> WalletSettings:
    """The wallet settings; without a node login in the environment (nor Vault), the one
    ``tradeplane up`` recorded for its own regtest nodes, if this is its platform."""
    from pydantic import SecretStr

    from tradeplane.platform.chains import ChainNodeError, read_record
    from tradeplane.wallets.settings import load_wallet_settings

    ws = load_wallet_settings()
    found: Located | None = getattr(args, "located", None)
    if ws.chain_rpc_username or loaded.vault is not None or found is None \
            or found.data_dir is None:
        return ws
    try:
        record = read_record(found.data_dir)
    except ChainNodeError:
        return ws
    if record.get("username"):
        ws = ws.model_copy(update={
            "chain_rpc_username": str(record["username"]),
            "chain_rpc_password": SecretStr(str(record.get("password", "")))})
    return ws


async def _reconcile_live(args: argparse.Namespace, loaded: Loaded, pool: Pool,
                          specs: list[WalletSpec]) -> tuple[int, int]:
    """Reconcile each wallet now; (shortfalls, wallets whose node could not answer), one
    line each."""
    from tradeplane.adapters.custody import PgCustodyStore
    from tradeplane.wallets.chain import ChainError
    from tradeplane.wallets.reconcile import reconcile
    from tradeplane.wallets.service import connect_chain
    from tradeplane.wallets.settings import WalletConfigError, node_login

    ws = _wallet_settings(args, loaded)
    bad = unreachable = 0
    for spec in specs:
        try:
            chain = connect_chain(spec, await node_login(spec, ws, loaded.vault))
        except WalletConfigError as exc:
            print(f"{spec.name} {spec.asset}: NOT CHECKED: {exc}")
            unreachable += 1
            continue
        try:
            r = await reconcile(spec, chain, PgCustodyStore(pool))
        except ChainError as exc:
            print(f"{spec.name} {spec.asset}: NOT CHECKED: its node did not answer: {exc}")
            unreachable += 1
            continue
        finally:
            await chain.close()
        print(r.describe())
        bad += 0 if r.ok else 1
    return bad, unreachable


#: How long the CLI waits for a wallet's watcher to check an address (as the gateway).
_WATCHER_TIMEOUT_S = 5.0


def cmd_withdraw_whitelist(args: argparse.Namespace) -> int:
    """Add (or ``--remove``) a user's withdrawal address, as ``POST``/``DELETE
    /admin/withdraw-whitelist``: the same use case, so the wallet's watcher checks an added
    address with its node first and the change is audited (as ``cli:<os user>``)."""
    from tradeplane.adapters import db, wallets_db
    from tradeplane.adapters.custody import BusWatchers, PgCustodyStore
    from tradeplane.domain.custody import WalletSpecError
    from tradeplane.usecases.audit import cli_actor
    from tradeplane.usecases.custody import CustodyCases, Refusal
    from tradeplane.usecases.errors import NotFound, Unavailable

    asset = args.asset.upper()

    async def go() -> int:
        bus = await _bus(args)
        try:
            pool = await _db_pool(args)
            try:
                account = await db.account_id(pool, args.user)
                if account is None:
                    print(f"no such user: {args.user}", file=sys.stderr)
                    return 2
                store = PgCustodyStore(pool)
                cases = CustodyCases(store, BusWatchers(bus, _WATCHER_TIMEOUT_S))
                entry = {"account": account, "asset": asset, "address": args.address}
                if args.remove:
                    done = await cases.whitelist_remove(cli_actor(), account, asset,
                                                        args.address, entry)
                else:
                    specs = await cases.wallets(asset)
                    if not specs:
                        print(f"no wallet holds {asset}", file=sys.stderr)
                        return 2
                    added = await cases.whitelist_add(cli_actor(), specs[0], account,
                                                      args.address, entry)
                    if isinstance(added, Refusal):
                        print(f"{args.address} is not a {asset} address its node accepts",
                              file=sys.stderr)
                        return 2
                    done = added
                listed = await wallets_db.whitelist(pool, account)
            except (NotFound, WalletSpecError, Unavailable) as exc:
                print(f"{exc}", file=sys.stderr)
                return 2
            finally:
                await pool.close()
        finally:
            await bus.close()
        print(json.dumps({"account": account, "changed": done,
                          "whitelist": [{"asset": a, "address": ad} for a, ad in listed]}))
        return 0

    return _run_async(go)


def cmd_escrow(args: argparse.Namespace) -> int:
    """Escrowed deals for admins: ``list`` (``--state OPEN`` / ``DISPUTED``...), ``show``
    a deal with its history, ``resolve`` a dispute (``--outcome release|refund``) as
    ``POST /admin/escrow/deals/{id}/resolve``: the same use case, audited as
    ``cli:<os user>``, told to both parties' user streams."""
    from tradeplane.adapters.escrow_db import BusEscrowNotifier, PgEscrowStore
    from tradeplane.domain.escrow import FINAL_STATES, Action
    from tradeplane.usecases.audit import cli_actor
    from tradeplane.usecases.escrow import Escrow, EscrowRefused

    reason = getattr(args, "reason", "") or ""
    if len(reason) > 256 or any(ord(ch) < 32 or ord(ch) == 127 for ch in reason):
        print("--reason: at most 256 characters, no control characters", file=sys.stderr)
        return 2

    async def go() -> int:
        pool = await _db_pool(args)
        bus = await _bus(args) if args.escrow_cmd == "resolve" else None
        try:
            escrow = Escrow(PgEscrowStore(pool),
                            None if bus is None else BusEscrowNotifier(bus))
            if args.escrow_cmd == "list":
                state = (args.state or "").upper()
                states = (None if not state else
                          [s for s in DealState if s not in FINAL_STATES] if state == "OPEN"
                          else [DealState(state)])
                rows = await escrow.deals(args.account, states, 1, args.limit)
                print(json.dumps([d.doc() for d in rows]))
                return 0
            if args.escrow_cmd == "show":
                deal, history = await escrow.deal(None, args.deal)
                print(json.dumps({**deal.doc(), "history": [
                    {"seq": t.seq, "action": t.action, "actor": t.actor,
                     "from": t.from_state, "to": t.to_state.value, "note": t.note,
                     "time": t.at_ms} for t in history]}))
                return 0
            action = (Action.RESOLVE_RELEASE if args.outcome == "release"
                      else Action.RESOLVE_REFUND)
            moved = await escrow.act(cli_actor(), None, args.deal, action,
                                     int(time.time() * 1000), request_id=args.request_id,
                                     note=args.reason)
            print(json.dumps(moved.deal.doc()))
            return 0
        except EscrowRefused as exc:
            print(f"refused ({exc.code}): {exc.msg}", file=sys.stderr)
            return 2
        finally:
            if bus is not None:
                await bus.close()
            await pool.close()

    return _run_async(go)


def cmd_faucet(args: argparse.Namespace) -> int:
    """Regtest coins from ``tradeplane up``'s own node to an address: its payer wallet
    pays, then ``--confirm N`` blocks are mined at once (default none: up mines a block
    every few seconds, so a deposit is seen PENDING, then CREDITED)."""
    from tradeplane.platform.chains import (
        ChainNodeError,
        ChainNodeUnavailable,
        faucet,
    )

    found = _locate(args)
    if found.data_dir is None:
        print("tradeplane faucet: pays from the regtest nodes of `tradeplane up`: name its "
              "data folder (--data-dir)", file=sys.stderr)
        return 2
    try:
        paid = faucet(found.data_dir, args.asset, args.address, args.amount,
                      confirm=args.confirm)
    except ChainNodeUnavailable as exc:
        print(f"tradeplane faucet: {exc}", file=sys.stderr)
        return 1
    except ChainNodeError as exc:
        print(f"tradeplane faucet: the {args.asset} node refused: {exc}", file=sys.stderr)
        return 1
    from tradeplane.domain.money import fmt_units

    print(json.dumps({"asset": args.asset, "address": args.address,
                      "amount": fmt_units(args.amount), "txid": paid.txid,
                      "blocksMined": paid.mined}))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """``export`` lines for a shell or a script (``eval "$(tradeplane env)"``): the
    platform's data folder, server URLs (the database's carries its password), the
    gateway's URL and the admin token. They are secrets: the output is for your own
    shell, not for a log."""
    found = _locate(args)
    s = _settings(args)
    values: list[tuple[str, str]] = []
    if found.data_dir is not None:
        values.append((DATA_DIR_ENV, str(found.data_dir)))
    values += [
        ("TRADEPLANE_DATABASE_URL", s.database_url),
        ("TRADEPLANE_NATS_URL", s.nats_url),
        ("TRADEPLANE_REDIS_URL", s.redis_url),
    ]
    if found.running is not None:
        values.append(("TRADEPLANE_GATEWAY_URL", f"http://127.0.0.1:{found.running.http_port}"))
    elif os.environ.get("TRADEPLANE_GATEWAY_URL"):
        values.append(("TRADEPLANE_GATEWAY_URL", os.environ["TRADEPLANE_GATEWAY_URL"]))
    admin = s.admin_token.get_secret_value()
    if admin:
        values.append(("TRADEPLANE_ADMIN_TOKEN", admin))
    if found.data_dir is not None and found.running is None:
        print(f"# {found.data_dir}: no `tradeplane up` is running there now",
              file=sys.stderr)
    for name, value in values:
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tradeplane.bench.run import main as bench_main

    return bench_main(args.rest)


# ----------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


#: The faucet's bounds: at most this many coins a payment, this many blocks mined.
_FAUCET_MAX_COINS = 1000
_FAUCET_MAX_BLOCKS = 100


def _faucet_asset(text: str) -> str:
    """argparse type: an asset the faucet pays."""
    from tradeplane.platform.chains import FAUCET_ASSETS

    asset = text.upper()
    if asset not in FAUCET_ASSETS:
        raise argparse.ArgumentTypeError(
            f"the faucet pays {' or '.join(FAUCET_ASSETS)}, not {text[:16]!r}")
    return asset


def _faucet_address(text: str) -> str:
    """argparse type: an address as the gateway accepts one (ASCII letters and digits)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9]{1,128}", text):
        raise argparse.ArgumentTypeError(
            f"not an address (1 to 128 ASCII letters and digits): {text[:32]!r}")
    return text


def _faucet_amount(text: str) -> int:
    """argparse type: a plain decimal amount of coins -> units, positive and bounded."""
    from tradeplane.domain.money import UNITS_PER_COIN, AmountError, plain_to_units

    try:
        units = plain_to_units(text)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(f"invalid amount: {exc}") from None
    if not 0 < units <= _FAUCET_MAX_COINS * UNITS_PER_COIN:
        raise argparse.ArgumentTypeError(
            f"amount must be above 0 and at most {_FAUCET_MAX_COINS}, got {text[:32]!r}")
    return units


def _faucet_blocks(text: str) -> int:
    """argparse type: blocks to mine, 0 to ``_FAUCET_MAX_BLOCKS``."""
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise argparse.ArgumentTypeError(f"not a number of blocks: {text[:16]!r}")
    value = int(text)
    if value > _FAUCET_MAX_BLOCKS:
        raise argparse.ArgumentTypeError(f"at most {_FAUCET_MAX_BLOCKS} blocks, got {value}")
    return value


_DATA_DIR_HELP = (
    "the data folder of the platform to use (`tradeplane up --data-dir`); default: "
    f"${DATA_DIR_ENV}, else the TRADEPLANE_* settings in the environment, else the nearest "
    "running platform (./.tradeplane or a parent folder's, then the last `tradeplane up`)")

_BENCH_HELP = """\
benchmarks:
  all                 the five below, in turn (default)
  book                the order book alone: seeded ops (60% limit, 30% cancel, 10% market),
                      the compiled and the pure-Python book side by side
  engine              the engine service: JetStream commands -> durable event batches
  e2e                 durable orders/s through the gateway (REST and WebSocket API); ack
                      latency at a fixed rate; per-stage latency; CPU per 1,000 orders
                      per process
  convert             Convert: firm quotes/s and accepted conversions/s through the gateway
  recovery            engine back after kill -9 with 1M commands in its stream: seconds
                      from the kill to a new command's events stored (target 5 s)

options (all, book):
  --ops N             book: operations (default 1000000)
  --seed N            seed of the operation mix (default 42)
options (book):
  --no-compare        skip the same workload through liquibook, cython-orderbook and
                      pyorderbook
  --compare-ops N     compare on the first N operations only (default: all --ops)
  --book B            both (default), compiled or python: which of our books to measure
options (engine):
  --symbols N         N > 1: one engine process per symbol, compared with one (default 1)
  --commands N        commands per symbol (default 300000)
  --per-msg N         commands per stream message (default 50)
  --commands-at-1 N   scaling run: commands per symbol at 1 command per message
  --nats-sync S       nats-server sync_interval: always (default), default or a duration
  --book B            the engine's order book: auto (default), compiled or python
options (e2e):
  --seconds S         closed-loop run length (default 10)
  --conns N           REST closed-loop connections (default 64)
  --ws-conns N        WebSocket API sockets (default 8)
  --ws-window N       WebSocket API requests in flight per socket (default 32)
  --rate R            fixed offered rate, orders/s (default 1000)
  --rate-seconds S    fixed-rate run length (default 10)
  --accounts N        trading accounts (default 500)
  --nats-sync S       JetStream sync_interval (default always)
  --no-stages         gateway without its stage stamps (their cost out of the figures)
  --only rest|ws|all  which API to load (default all)
  --keep DIR          data folder to keep (default: temporary)
options (convert):
  --seconds S         length of each run (default 10)
  --conns N           concurrent clients, one key each (default 16)
  --keep DIR          data folder to keep (default: temporary)
options (recovery):
  --commands N        commands in the stream (default 1000000)
  --per-msg N         commands per stream message (default 50)
  --snapshot-every N  the engine's snapshot interval (default 50000, the setting's)
  --keep DIR          data folder to keep (default: temporary)

e.g. tradeplane bench book --no-compare; tradeplane bench engine --symbols 2
"""


def _fee_ppm(text: str) -> int:
    """argparse type: a fee in parts per million, 0 to 999999 (as the admin API takes)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 7):
        raise argparse.ArgumentTypeError(f"not a fee in parts per million: {text[:40]!r}")
    value = int(text)
    if value >= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be below 1000000, got {value}")
    return value


def _symbol_arg(text: str) -> str:
    """argparse type: a Binance-style symbol (2-20 upper-case letters and digits)."""
    if not (2 <= len(text) <= 20 and text.isascii() and text.isalnum() and text.isupper()):
        raise argparse.ArgumentTypeError(f"not a symbol like BTCUSDT: {text[:40]!r}")
    return text


def _interval_arg(text: str) -> float:
    """argparse type: seconds, 0 to 3600."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
    if not 0 <= value <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, got {text}")
    return value


def _chaos_arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser of :mod:`tradeplane.chaos.plan` (exit 2 on error)."""

    def parsed(text: str) -> Any:
        from tradeplane.chaos.plan import OptionError

        try:
            return parse(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parsed


def cmd_chaos(args: argparse.Namespace) -> int:
    from tradeplane.chaos import plan
    from tradeplane.chaos.clock import PACKAGE, libfaketime
    from tradeplane.chaos.disk import can_mount
    from tradeplane.chaos.plan import OptionError, for_bus
    from tradeplane.chaos.run import Chaos, Options
    from tradeplane.platform.chains import LITECOIN_PACKAGE, ChainNodeError, find_binary
    from tradeplane.platform.supervisor import SupervisorError

    soak = args.soak is not None
    period = args.period if args.period is not None else (60.0 if soak else 20.0)
    try:
        faults = for_bus(args.faults, args.nats_cluster)
    except OptionError as exc:
        print(f"tradeplane chaos: {exc}", file=sys.stderr)
        return 2
    if "disk-full" in faults and not can_mount():
        faults = tuple(f for f in faults if f != "disk-full")
        print("tradeplane chaos: disk-full left out: it mounts a small filesystem for the "
              "JetStream store, which needs root", file=sys.stderr)
    if "clock-skew" in faults and libfaketime() is None:
        faults = tuple(f for f in faults if f != "clock-skew")
        print(f"tradeplane chaos: clock-skew left out: it needs Debian's {PACKAGE}",
              file=sys.stderr)
    if any(f in plan.CHAIN_FAULTS for f in faults):
        try:
            find_binary("litecoind", LITECOIN_PACKAGE)
        except ChainNodeError as exc:
            faults = tuple(f for f in faults if f not in plan.CHAIN_FAULTS)
            print(f"tradeplane chaos: {', '.join(plan.CHAIN_FAULTS)} left out: {exc}",
                  file=sys.stderr)
    if not faults:
        return 2
    options = Options(seed=args.seed, duration_s=args.soak if soak else args.duration,
                      faults=faults, period_s=period, soak=soak,
                      data_dir=Path(args.data_dir).absolute() if args.data_dir else None,
                      nats_cluster=args.nats_cluster, standby=args.standby or None)
    try:
        return Chaos(options).run()
    except (SupervisorError, ChainNodeError) as exc:
        print(f"tradeplane chaos: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradeplane", description=__doc__)
    p.add_argument("--dev", action="store_true",
                   help="dev mode: allow placeholder secrets (TRADEPLANE_DEV_MODE=1)")
    p.add_argument("--data-dir", dest="global_data_dir", type=_data_dir_arg, default=None,
                   metavar="DIR", help=_DATA_DIR_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    platform = argparse.ArgumentParser(add_help=False)
    platform.add_argument("--data-dir", dest="platform_dir", type=_data_dir_arg,
                          default=None, metavar="DIR", help=_DATA_DIR_HELP)

    def cmd_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        """A subcommand that talks to a platform: it takes ``--data-dir`` too."""
        made: argparse.ArgumentParser = sub.add_parser(name, parents=[platform], **kw)
        return made

    cmd_parser("gateway", help="REST + WebSocket API").set_defaults(fn=cmd_gateway)
    m = cmd_parser("matching", help="matching engine for one symbol")
    m.add_argument("--symbol", required=True, help="e.g. BTC-USDT")
    m.add_argument("--rules", default="",
                   help="TradingPair spec as JSON (the operator's ConfigMap); registers the "
                        "pair and enforces its trading state")
    m.add_argument("--standby", action="store_true",
                   help="hot standby: one of several replicas of the symbol's engine; it "
                        "follows the log read-only and writes only while it holds the "
                        "symbol's lease (ENGINE_LEASES)")
    m.set_defaults(fn=cmd_matching)
    cmd_parser("settlement", help="ledger settlement").set_defaults(fn=cmd_settlement)
    cmd_parser("marketdata", help="market data").set_defaults(fn=cmd_marketdata)
    cmd_parser("rates", help="Convert's rates: indicative ratios and index prices"
               ).set_defaults(fn=cmd_rates)
    cmd_parser("hedger", help="Convert desk's hedger: IOC orders on our books from the "
               "hedge queue (backoff, dead-letter stream)").set_defaults(fn=cmd_hedger)

    ww = cmd_parser("wallet-watcher",
                        help="one wallet's deposit watcher, withdrawals and reconciliation")
    ww.add_argument("--wallet", required=True, help="the Wallet's name")
    ww.set_defaults(fn=cmd_wallet_watcher)

    mm = sub.add_parser("marketmaker", help="demo market maker (keeps the books alive)")
    mm.add_argument("--url", default="http://127.0.0.1:8080")
    mm.add_argument("--api-key", required=True,
                    help="API key; its secret comes from $TRADEPLANE_MARKETMAKER_API_SECRET "
                    "or the file named by $TRADEPLANE_MARKETMAKER_API_SECRET_FILE, never "
                    "from the command line (visible in ps)")
    mm.add_argument("--symbols", nargs="+", type=_symbol_arg,
                    default=["BTCUSDT", "ETHUSDT", "ETHBTC"], help="Binance-style symbols")
    mm.add_argument("--interval", type=_interval_arg, default=2.0,
                    help="seconds between rounds (0-3600; each round places about 11 "
                         "orders a symbol: mind the key's 100 orders per 10 s)")
    mm.set_defaults(fn=cmd_marketmaker)

    up = sub.add_parser("up", help="run the whole platform locally (embedded servers)")
    up.add_argument("--data-dir", default=".tradeplane", help="where data is kept")
    up.add_argument("--port", type=int, default=8080, help="gateway port")
    up.add_argument("--no-market-maker", action="store_true", help="no demo market maker")
    up.add_argument("--no-chains", action="store_true",
                    help="no regtest chain nodes, wallets or LTC/XMR markets (they run when "
                         "Debian's litecoind / monero are installed)")
    up.add_argument("--observability", action="store_true",
                    help="also run Prometheus and Alertmanager (Debian's, when installed) "
                         "scraping every process, with the chart's alert rules")
    up.set_defaults(fn=cmd_up)

    from tradeplane.chaos import plan

    ch = sub.add_parser(
        "chaos", help="the local platform under load while faults are injected; checks "
                      "every invariant after each and prints a table",
        description="Starts a local platform in its own servers, drives a mixed load from "
                    "several accounts and injects faults on a seeded schedule: "
                    + ", ".join(plan.FAULTS) + "; on a regtest litecoind with its "
                    "wallet watcher, deposits and withdrawals in the load: "
                    + ", ".join(plan.CHAIN_FAULTS) + "; with --nats-cluster, "
                    + ", ".join(plan.CLUSTER_FAULTS) + " instead of "
                    + " and ".join(plan.SINGLE_NATS_FAULTS) + ". Exits 0 when nothing was "
                    "lost or duplicated and every invariant held, 1 otherwise.")
    ch.add_argument("--seed", type=_chaos_arg(plan.parse_seed), default=1,
                    help="the schedule's seed (the same seed replays the same faults)")
    how_long = ch.add_mutually_exclusive_group()
    how_long.add_argument("--duration", type=_chaos_arg(plan.parse_duration), default=300.0,
                          help="how long to inject faults: 90s, 5m, 1h (10 s to 24 h; "
                               "stretched so that each fault is injected at least once)")
    how_long.add_argument("--soak", type=_chaos_arg(plan.parse_duration), default=None,
                          metavar="DURATION",
                          help="a soak of that long (e.g. 30m): a fault a minute by "
                               "default, and at the end each process's memory (and its "
                               "slope) and open descriptors, and the streams' and tables' "
                               "growth")
    ch.add_argument("--faults", type=_chaos_arg(plan.parse_faults), default=plan.ALL_FAULTS,
                    help="all (those the bus has), or some of: " + ", ".join(plan.ALL_FAULTS))
    ch.add_argument("--nats-cluster", action="store_true",
                    help="the bus as three clustered nats-server nodes on loopback, the "
                         "streams with three replicas, every process given the three URLs")
    ch.add_argument("--standby", action="store_true",
                    help="each engine as two replicas with --standby (hot standby); on "
                         "anyway when pause-engine is injected")
    ch.add_argument("--period", type=_chaos_arg(plan.parse_period), default=None,
                    help="seconds between injections (5 to 600; 20 by default, 60 in a "
                         "soak)")
    ch.add_argument("--data-dir", default="", help="keep the servers' data and the logs "
                    "there (default: a temporary folder)")
    ch.set_defaults(fn=cmd_chaos)

    cmd_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)

    pa = cmd_parser("pair-add", help="create or update a trading pair")
    pa.add_argument("--demo", action="store_true", help="the demo pairs")
    pa.add_argument("--symbol", default="", help="BASE-QUOTE")
    pa.add_argument("--tick", default="0.01")
    pa.add_argument("--lot", default="0.0001")
    pa.add_argument("--min-qty", default="")
    pa.add_argument("--max-qty", default="10000")
    pa.add_argument("--min-notional", default="1")
    pa.add_argument("--maker-fee-ppm", type=int, default=1000)
    pa.add_argument("--taker-fee-ppm", type=int, default=1000)
    pa.set_defaults(fn=cmd_pair_add)

    pt = cmd_parser("pair-trading", help="halt / resume / cancel-only a pair, live")
    pt.add_argument("--symbol", required=True, help="e.g. BTC-USDT")
    pt.add_argument("--state", required=True, choices=["enabled", "halted", "cancel-only"])
    pt.set_defaults(fn=cmd_pair_trading)

    pf = cmd_parser("pair-fees", help="set a pair's maker/taker fees (parts per million)")
    pf.add_argument("--symbol", required=True, help="e.g. BTC-USDT")
    pf.add_argument("--maker-fee-ppm", type=_fee_ppm, required=True)
    pf.add_argument("--taker-fee-ppm", type=_fee_ppm, required=True)
    pf.set_defaults(fn=cmd_pair_fees)

    ks = cmd_parser("kill-switch", help="halt every pair at once (on), resume (off), show")
    ks.add_argument("action", choices=["on", "off", "status"])
    ks.add_argument("--reason", default="", help="recorded with the switch (on)")
    ks.set_defaults(fn=cmd_kill_switch)

    fz = cmd_parser("user-freeze", help="freeze a user's account (or --unfreeze it)")
    fz.add_argument("user")
    fz.add_argument("--reason", default="", help="why (freeze)")
    fz.add_argument("--unfreeze", action="store_true")
    fz.set_defaults(fn=cmd_user_freeze)

    u = cmd_parser("user-create", help="create a user account")
    u.add_argument("name")
    u.set_defaults(fn=cmd_user_create)

    k = cmd_parser("key-create", help="create an API key for a user")
    k.add_argument("user")
    k.add_argument("--permissions", default="read,trade",
                   help="some of read,trade,withdraw,convert,escrow")
    k.add_argument("--type", default="HMAC_SHA256", choices=["HMAC_SHA256", "ED25519"])
    k.add_argument("--public-key-file", default="", help="ED25519: the user's public key (PEM)")
    k.add_argument("--ip-allow", default="", help="addresses/CIDRs, comma-separated")
    k.add_argument("--expires-days", type=_positive_int, default=None,
                   help="days until the key expires (default: never)")
    k.add_argument("--label", default="")
    k.set_defaults(fn=cmd_key_create)

    kr = cmd_parser("key-revoke", help="revoke an API key")
    kr.add_argument("api_key")
    kr.set_defaults(fn=cmd_key_revoke)

    ad = cmd_parser("admin-create", help="create an admin identity (prints its token once)")
    ad.add_argument("name")
    ad.add_argument("--role", required=True,
                    choices=["SuperAdmin", "Operator", "Support", "Auditor"])
    ad.set_defaults(fn=cmd_admin_create)

    c = cmd_parser("credit", help="credit test funds (dev/admin)")
    c.add_argument("user")
    c.add_argument("asset")
    c.add_argument("amount")
    c.add_argument("--ref", default="", help="idempotency reference")
    c.set_defaults(fn=cmd_credit)

    cmd_parser("check-ledger", help="verify ledger invariants").set_defaults(
        fn=cmd_check_ledger)

    wa = cmd_parser("wallet-add", help="register or update a wallet (a Wallet spec)")
    wa.add_argument("name", help="wallet name (a DNS label, e.g. litecoin-regtest)")
    wa.add_argument("--chain", required=True, choices=["bitcoin", "litecoin", "monero"])
    wa.add_argument("--asset", required=True, help="asset credited, e.g. LTC")
    wa.add_argument("--network", default="regtest", choices=["mainnet", "testnet", "regtest"])
    wa.add_argument("--rpc-url", required=True,
                    help="node RPC URL (bitcoind: may end in /wallet/<name>; monero: "
                         "monero-wallet-rpc)")
    wa.add_argument("--rpc-wallet", default="", help="bitcoind wallet name")
    wa.add_argument("--daemon-url", default="", help="monerod RPC URL (monero)")
    wa.add_argument("--account-index", type=int, default=0, help="Monero wallet account")
    wa.add_argument("--vault-path", default="", help="Vault KV path of the node's login")
    wa.add_argument("--confirmations", type=int, required=True)
    wa.add_argument("--hot-min", default="0", help="never send below this balance")
    wa.add_argument("--hot-max", default="", help="alert above this balance")
    wa.add_argument("--withdraw-fee", default="0.001")
    wa.add_argument("--withdraw-min", default="0.002")
    wa.add_argument("--approval-threshold", default="10",
                    help="withdrawals above this amount wait for an admin")
    wa.add_argument("--whitelist-required", action="store_true",
                    help="withdrawals only to whitelisted addresses")
    wa.set_defaults(fn=cmd_wallet_add)

    cw = cmd_parser("check-wallets",
                        help="wallet reconciliation, open adjustments, custody invariants")
    cw.add_argument("--wallet", default="", help="only this wallet")
    cw.add_argument("--live", action="store_true",
                    help="ask the node now (needs its credentials) instead of printing the "
                         "watcher's last reconciliation")
    cw.set_defaults(fn=cmd_check_wallets)

    wl = cmd_parser("withdraw-whitelist",
                        help="add (or --remove) a user's withdrawal address, as POST/"
                             "DELETE /admin/withdraw-whitelist: the wallet's watcher checks "
                             "an added address with its node first; audited")
    wl.add_argument("user")
    wl.add_argument("asset")
    wl.add_argument("address")
    wl.add_argument("--remove", action="store_true")
    wl.set_defaults(fn=cmd_withdraw_whitelist)

    es = cmd_parser("escrow", help="escrowed deals: list, show, resolve a dispute (as "
                                   "the admin API; audited)")
    es_sub = es.add_subparsers(dest="escrow_cmd", required=True)
    esl = es_sub.add_parser("list", help="deals, oldest first")
    esl.add_argument("--state", choices=["OPEN", *(st.value for st in DealState)],
                     type=str.upper, help="one state, or OPEN (not final)")
    esl.add_argument("--account", type=int, help="only this account's (seller or buyer)")
    esl.add_argument("--limit", type=int, default=100, choices=range(1, 1001),
                     metavar="1..1000")
    ess = es_sub.add_parser("show", help="a deal and its history")
    ess.add_argument("deal", type=int)
    esr = es_sub.add_parser("resolve", help="resolve a DISPUTED deal: release to the "
                                            "buyer or refund the seller")
    esr.add_argument("deal", type=int)
    esr.add_argument("--outcome", choices=["release", "refund"], required=True)
    esr.add_argument("--reason", required=True)
    esr.add_argument("--request-id", default=None,
                     help="the same id again does nothing again")
    es.set_defaults(fn=cmd_escrow)

    fc = cmd_parser("faucet", help="regtest coins from tradeplane up's own node to an "
                                   "address (e.g. your deposit address)")
    fc.add_argument("asset", type=_faucet_asset, help="LTC or XMR")
    fc.add_argument("address", type=_faucet_address)
    fc.add_argument("amount", type=_faucet_amount,
                    help=f"coins, a plain decimal (at most {_FAUCET_MAX_COINS})")
    fc.add_argument("--confirm", type=_faucet_blocks, default=0, metavar="N",
                    help="mine N blocks at once (default 0: up mines one every few "
                         f"seconds; at most {_FAUCET_MAX_BLOCKS})")
    fc.set_defaults(fn=cmd_faucet)

    b = sub.add_parser(
        "bench", help="benchmarks (book, engine, end-to-end, convert); prints figures",
        usage="tradeplane bench [all|book|engine|e2e|convert|recovery] [options]",
        description="Runs a benchmark (default: all five) in its own temporary servers "
                    "and prints its figures.",
        epilog=_BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("rest", nargs=argparse.REMAINDER, metavar="[which] [options]",
                   help="the benchmark and its options, below")
    b.set_defaults(fn=cmd_bench)
    e = cmd_parser("env", help="print `export TRADEPLANE_...` lines for a shell or a script",
                   description="Prints the settings of the platform found (see --data-dir) "
                               "as `export` lines: eval \"$(tradeplane env)\". They hold "
                               "secrets (the database password, the admin token).")
    e.set_defaults(fn=cmd_env)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tradeplane.adapters.bus import BusError
    from tradeplane.adapters.db import DatabaseError
    from tradeplane.services import ConfigError

    try:
        rc: int = args.fn(args)
    except (DiscoveryError, PlatformUnreachable) as exc:
        print(f"tradeplane: {exc}", file=sys.stderr)
        return 1
    except (ValidationError, ConfigError, SecretSourceError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (BusError, DatabaseError, OSError) as exc:
        print(f"tradeplane {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
