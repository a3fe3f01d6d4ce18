"""Custody on the laptop, the pure parts: the custody loops' backoff, the banner's custody
lines, and the faucet's bounded arguments (refused by the parser, one line, exit 2)."""

from __future__ import annotations

import pytest

from tradeplane.cli import build_parser
from tradeplane.domain.money import to_units
from tradeplane.platform.chains import NO_CUSTODY, LocalCustody
from tradeplane.wallets.loop import MAX_BACKOFF_S, Backoff


def test_failed_passes_wait_twice_as_long_each_time_up_to_the_cap_and_a_success_resets() -> None:
    b = Backoff(2.0)
    assert [b.failed() for _ in range(7)] == [4.0, 8.0, 16.0, 32.0, MAX_BACKOFF_S,
                                              MAX_BACKOFF_S, MAX_BACKOFF_S]
    assert b.succeeded() == 2.0
    assert b.failed() == 4.0


def test_a_loop_slower_than_the_cap_keeps_its_own_interval_when_failing() -> None:
    b = Backoff(300.0)
    assert b.failed() == 300.0 and b.failed() == 300.0


def test_the_banner_names_the_running_wallets_and_the_package_for_each_missing_one() -> None:
    custody = LocalCustody(wallets=["ltc-regtest"], pairs=["LTC-USDT", "LTC-BTC"], env={},
                           missing={"XMR": "monero"})
    lines = custody.banner().splitlines()
    assert lines[0].split()[:3] == ["wallets", "ltc-regtest", "(regtest;"]
    assert "tradeplane faucet ASSET ADDRESS AMOUNT" in lines[0]
    assert lines[1].startswith("  no XMR wallet") and "apt-get install monero" in lines[1]
    assert NO_CUSTODY.banner() == ""


def test_the_faucet_parses_a_plain_amount_into_units() -> None:
    args = build_parser().parse_args(["faucet", "ltc", "rltc1qabc", "0.5", "--confirm", "2"])
    assert (args.asset, args.address, args.amount, args.confirm) == (
        "LTC", "rltc1qabc", to_units("0.5"), 2)


@pytest.mark.parametrize(("argv", "says"), [
    (["faucet", "DOGE", "a", "1"], "the faucet pays LTC or XMR"),
    (["faucet", "LTC", "a b", "1"], "not an address"),
    (["faucet", "LTC", "a" * 129, "1"], "not an address"),
    (["faucet", "LTC", "a", "1e3"], "not a plain decimal"),
    (["faucet", "LTC", "a", "\u0661"], "not a plain decimal"),  # Arabic-Indic one
    (["faucet", "LTC", "a", "0"], "above 0 and at most 1000"),
    (["faucet", "LTC", "a", "1000.00000001"], "above 0 and at most 1000"),
    (["faucet", "LTC", "a", "0.000000001"], "invalid amount"),
    (["faucet", "LTC", "a", "1", "--confirm", "101"], "at most 100 blocks"),
    (["faucet", "LTC", "a", "1", "--confirm", "-1"], "not a number of blocks"),
    (["faucet", "LTC", "a", "1", "--confirm", "9" * 40], "not a number of blocks"),
])
def test_the_faucet_refuses_an_unbounded_argument_in_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("tradeplane faucet: error: ") and says in error, error
