"""Engine-service benchmark: commands/s from the JetStream command stream to durable event
batches, for one symbol, on real NATS (``sync_interval: always``).

The stream is filled first (seeded book mix from ``bench.book``, ``--per-msg`` commands per
message as the gateway's batching produces them), then one engine runs until it has
published the events of the last message; the time between its first and last batch is
the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tradeplane.adapters.bus import Bus
from tradeplane.bench.book import generate_ops
from tradeplane.domain import codec
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.engine.service import Engine
from tradeplane.platform.servers import NatsServer

RULES = DEMO_PAIRS[0]


async def _run(url: str, commands: int, per_msg: int, seed: int) -> tuple[float, int, int]:
    bus = await Bus.connect(url, name="bench-engine")
    try:
        await bus.ensure_symbol(RULES.symbol)
        await bus.ensure_events()
        ops, _ = generate_ops(commands, seed)
        acks = []
        for i in range(0, len(ops), per_msg):
            data = codec.encode(ops[i:i + per_msg])
            # publish_async returns the future of the ack once the message is sent
            acks.append(await bus.js.publish_async(
                f"cmd.{RULES.symbol}", data, headers={"Nats-Msg-Id": f"m{i}"}))
        await asyncio.gather(*acks)
        last = await bus.last_command_seq(RULES.symbol)
        assert last == len(acks), f"stream holds {last} of {len(acks)} messages"
        engine = Engine(bus, RULES, snapshot_every=10**12)
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(engine.run(stop))
        while engine.published_seq < last:  # noqa: ASYNC110 - polling a plain attribute
            await asyncio.sleep(0.005)
        took = time.perf_counter() - started
        stop.set()
        await task
        info = await bus.js.stream_info("EVENTS")
        return took, len(ops), int(info.state.messages)
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tradeplane bench engine")
    p.add_argument("--commands", type=int, default=300_000)
    p.add_argument("--per-msg", type=int, default=50, help="commands per stream message")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="tp-bench-engine-"))
    nats = NatsServer(folder / "nats", sync="always")
    nats.start()
    try:
        took, n, batches = asyncio.run(_run(nats.url, args.commands, args.per_msg, args.seed))
    finally:
        nats.stop()
    print("engine service (JetStream commands -> book -> durable event batches), one symbol")
    print(f"  commands                  {n:10,d}  ({args.per_msg} per stream message)")
    print(f"  event batches published   {batches:10,d}")
    print(f"  commands/s                {n / took:10,.0f}  ({took:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
