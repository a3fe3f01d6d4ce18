"""The end-to-end benchmark's load generator: a process of its own, so that its event
loop and CPU are not the gateway's (``python -m tradeplane.bench.loadgen <spec>``).

``spec`` is a pickle written by :mod:`tradeplane.bench.e2e`: the phase (``closed`` or
``rate``), the transport (``rest`` or ``ws``), the pre-signed requests and the phase's
knobs. The generator connects, prints ``ready``, waits for a line on stdin (the parent
reads every process's CPU meanwhile), runs the phase, writes its result to the JSON file
``spec["out"]`` (counts, seconds, latencies in ms and its own CPU seconds for the phase)
and prints ``done``.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
import time
from typing import Any

import websockets

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _roundtrip(conn: Conn, req: bytes) -> int:
    reader, writer = conn
    writer.write(req)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(status_line.split()[1])


class _WsConn:
    """One WebSocket API socket; answers matched to requests by id."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.waiting: dict[int, asyncio.Future[int]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            doc = json.loads(frame)
            fut = self.waiting.pop(doc.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(doc.get("status", 0))

    async def roundtrip(self, rid: int, frame: str) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        await self.ws.send(frame)
        return await fut

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


async def _go() -> None:
    """Tell the parent we are connected; wait for its word."""
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, transport = spec["host"], spec["port"], spec["transport"]
    reqs: list[Any] = spec["requests"]
    conns_n: int = spec["conns"]
    window: int = spec.get("window", 1)  # requests in flight per connection (WebSocket)
    if transport == "rest":
        conns: list[Any] = [await asyncio.open_connection(host, port)
                            for _ in range(conns_n)]

        async def rt(conn: Any, i: int) -> int:
            return await _roundtrip(conn, reqs[i])
    else:
        conns = [_WsConn(await websockets.connect(f"ws://{host}:{port}/ws-api/v3",
                                                  max_queue=None, compression=None))
                 for _ in range(conns_n)]

        async def rt(conn: Any, i: int) -> int:
            rid, frame = reqs[i]
            return int(await conn.roundtrip(rid, frame))

    await _go()
    cpu0 = time.process_time()
    lat: list[float] = []
    ok = bad = 0
    statuses: dict[int, int] = {}  # of the refused requests
    if spec["phase"] == "closed":
        it = iter(range(len(reqs)))
        deadline = time.perf_counter() + spec["seconds"]

        async def lane(conn: Any) -> None:
            nonlocal ok, bad
            for i in it:
                if time.perf_counter() >= deadline:
                    break
                status = await rt(conn, i)
                if status == 200:
                    ok += 1
                else:
                    bad += 1
                    statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(lane(c) for c in conns for _ in range(window)))
        took = time.perf_counter() - started
    else:
        rate: float = spec["rate"]
        n = min(len(reqs), int(rate * spec["seconds"]))
        pool: asyncio.Queue[Any] = asyncio.Queue()
        for c in conns:
            for _ in range(window):
                pool.put_nowait(c)
        started = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            # Latency from the scheduled send time: queueing in the generator is not hidden.
            nonlocal ok, bad
            at = started + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = await pool.get()
            try:
                status = await rt(conn, i)
            finally:
                pool.put_nowait(conn)
            if status == 200:
                ok += 1
                lat.append((time.perf_counter() - at) * 1000)
            else:
                bad += 1
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
        took = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    for c in conns:
        if transport == "rest":
            c[1].close()
        else:
            await c.close()
    return {"ok": ok, "bad": bad, "seconds": took, "lat_ms": lat, "cpu_s": cpu,
            "statuses": {str(k): v for k, v in statuses.items()}}


def main() -> int:
    with open(sys.argv[1], "rb") as f:
        spec = pickle.load(f)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    out = asyncio.run(run(spec))
    if spec.get("out"):
        with open(spec["out"], "w") as f:
            json.dump(out, f)
        print("done", flush=True)
    else:
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
