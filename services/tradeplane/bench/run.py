"""``tradeplane bench``: every benchmark the project ships, printing figures."""

from __future__ import annotations

import argparse

from tradeplane.bench import book, convert, e2e, engine, recovery


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tradeplane bench")
    p.add_argument("which", nargs="?", default="all",
                   choices=["all", "book", "engine", "e2e", "convert", "recovery"])
    p.add_argument("--ops", type=int, default=1_000_000, help="book: operations")
    p.add_argument("--seed", type=int, default=42)
    args, rest = p.parse_known_args(argv)
    rc = 0
    if args.which in ("all", "book"):
        rc |= book.main(["--ops", str(args.ops), "--seed", str(args.seed),
                         *(rest if args.which == "book" else [])])
    if args.which in ("all", "engine"):
        rc |= engine.main(rest if args.which == "engine" else [])
    if args.which in ("all", "e2e"):
        rc |= e2e.main(rest if args.which == "e2e" else [])
    if args.which in ("all", "convert"):
        rc |= convert.main(rest if args.which == "convert" else [])
    if args.which in ("all", "recovery"):
        rc |= recovery.main(rest if args.which == "recovery" else [])
    return rc
