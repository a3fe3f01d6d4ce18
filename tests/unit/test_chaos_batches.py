"""The check of EVENTS that ``tradeplane chaos`` runs after each fault: each symbol's
event batches follow its command log, and an engine replaced by its standby (fenced, or
paused and woken) appends nothing after the takeover."""

from __future__ import annotations

from tradeplane.chaos.compose import batch_failures


def test_batches_that_follow_the_log_through_a_takeover_pass() -> None:
    batches = [("BTCUSDT", 1, 4, "a"), ("ETHUSDT", 1, 2, ""), ("BTCUSDT", 5, 5, "a"),
               ("BTCUSDT", 6, 9, "b"), ("ETHUSDT", 3, 3, "")]
    assert batch_failures(batches, {"BTCUSDT": 9, "ETHUSDT": 3}) == []


def test_a_batch_covering_commands_again_is_a_failure() -> None:
    batches = [("BTCUSDT", 1, 4, "a"), ("BTCUSDT", 3, 6, "a")]
    assert batch_failures(batches, {"BTCUSDT": 6}) == [
        "BTCUSDT: an event batch for commands 3..6 follows one ending at 4 "
        "(again or out of order)"]


def test_a_batch_skipping_commands_is_a_failure() -> None:
    batches = [("BTCUSDT", 1, 4, ""), ("BTCUSDT", 6, 6, "")]
    assert batch_failures(batches, {"BTCUSDT": 6}) == [
        "BTCUSDT: an event batch for commands 6..6 follows one ending at 4 "
        "(skipping commands)"]


def test_a_replaced_writer_appending_after_the_takeover_is_a_failure() -> None:
    # "a" was replaced by "b" and woke up: even a batch that follows on is not its to write.
    batches = [("BTCUSDT", 1, 4, "a"), ("BTCUSDT", 5, 6, "b"), ("BTCUSDT", 7, 7, "a")]
    assert batch_failures(batches, {"BTCUSDT": 7}) == [
        "BTCUSDT: a appended commands 7..7 after another engine had taken over from it"]


def test_batches_past_the_end_of_the_command_log_are_a_failure() -> None:
    assert batch_failures([("ETHUSDT", 1, 3, "")], {"ETHUSDT": 2, "BTCUSDT": 0}) == [
        "ETHUSDT: event batches go to command 3, past the log's end 2"]
