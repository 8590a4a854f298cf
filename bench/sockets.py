#!/usr/bin/env python3
"""WebSocket memory: what one open socket costs the gateway, from one run.

  bench/sockets.py                          # about 20 s after the build
  SOCKETS=500 bench/sockets.py              # fewer sockets
  BENCH_BIN=path/to/ssm-session-gateway OUT=/tmp/b.md bench/sockets.py
  BASELINE_BIN=path/to/older/build bench/sockets.py   # both, in one run

Builds release (unless BENCH_BIN names a build), then, for each state a
socket can idle in, starts a fresh demo (`demo --bench-routes`, which lifts
the per-caller limits) on free loopback ports, opens and closes 50 sockets
to warm it, reads its resident memory (VmRSS), opens SOCKETS sockets (2000
by default; graphql-transport-ws, 100 at a time) and reads it again:

- "upgraded, no connection_init": what anyone who reaches the port can make
  the gateway hold, without credentials, for `live.init_timeout_ms`;
- "connection_init acknowledged": a connected client with no subscription;
- "one subscription running": the same, subscribed to `sessionEvents` (no
  event comes: the demo's sessions do not change without `--churn`).

Each socket's share is the growth divided by SOCKETS. With BASELINE_BIN,
that build is measured too, each state right after this one's. Rewrites the
"WebSockets" section of BENCHMARKS.md (OUT). Standard library only.
"""

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

KEY = "demo-admin"
SOCKETS = int(os.environ.get("SOCKETS", "2000"))
OUT = os.environ.get("OUT", "BENCHMARKS.md")
AT_ONCE = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def frame(text):
    """A masked text frame, as a client must send it."""
    payload = text.encode()
    mask = os.urandom(4)
    if len(payload) < 126:
        head = bytes([0x81, 0x80 | len(payload)])
    else:
        head = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader):
    """The payload of the server's next frame (servers do not mask)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


SUBSCRIBE = json.dumps({"id": "1", "type": "subscribe",
                        "payload": {"query": "subscription { sessionEvents { kind } }"}})


async def open_socket(port, init, subscribe):
    """An upgraded socket; with `init`, past its connection_ack; with
    `subscribe`, running a subscription too."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head.splitlines()[0].decode()}")
    if init:
        writer.write(frame(json.dumps(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {KEY}"}})))
        opcode, payload = await read_frame(reader)
        if opcode != 1 or json.loads(payload)["type"] != "connection_ack":
            raise RuntimeError(f"no connection_ack: opcode {opcode}, {payload[:200]!r}")
    if subscribe:
        writer.write(frame(SUBSCRIBE))
        await writer.drain()
    return writer


async def open_many(port, n, init, subscribe=False):
    gate = asyncio.Semaphore(AT_ONCE)

    async def one():
        async with gate:
            return await open_socket(port, init, subscribe)

    return await asyncio.gather(*(one() for _ in range(n)))


def measure(binary, init, subscribe):
    """(RSS before, RSS with SOCKETS sockets open), in KiB, of a fresh demo."""
    port = free_port()
    demo = subprocess.Popen(
        [binary, "demo", "--bench-routes", "--listen", f"127.0.0.1:{port}",
         "--emulator-listen", "127.0.0.1:0", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                if demo.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"error: the demo did not answer /healthz on port {port}")
                time.sleep(0.1)

        async def run():
            warm = await open_many(port, 50, True)
            for writer in warm:
                writer.close()
            await asyncio.sleep(1)
            before = rss_kib(demo.pid)
            started = time.monotonic()
            sockets = await open_many(port, SOCKETS, init, subscribe)
            # Well inside live.init_timeout_ms (10 s), which would close the
            # sockets that never sent connection_init.
            await asyncio.sleep(1)
            if time.monotonic() - started > 8:
                sys.exit("error: opening the sockets took too long to measure them all open")
            after = rss_kib(demo.pid)
            for writer in sockets:
                writer.close()
            return before, after

        return asyncio.run(run())
    finally:
        demo.terminate()
        demo.wait()


def main():
    binary = os.environ.get("BENCH_BIN")
    if not binary:
        print("== cargo build --release", flush=True)
        subprocess.run(["cargo", "build", "--release", "--locked"], check=True)
        binary = "target/release/ssm-session-gateway"
    builds = [("this build", binary)]
    if os.environ.get("BASELINE_BIN"):
        builds.append((f"baseline ({os.environ.get('BASELINE_NAME', 'BASELINE_BIN')})",
                       os.environ["BASELINE_BIN"]))
    rows = []
    for state, init, subscribe in [("upgraded, no `connection_init`", False, False),
                                   ("`connection_init` acknowledged", True, False),
                                   ("one subscription running", True, True)]:
        for build, path in builds:
            before, after = measure(path, init, subscribe)
            per = (after - before) / SOCKETS
            print(f"   {build}, {state}: {before} KiB, then {after} KiB with {SOCKETS} open: "
                  f"{per:.1f} KiB a socket")
            rows.append(f"| {state} | {build} | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB "
                        f"| **{per:.1f} KiB** |")

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown CPU")
    section = "\n".join([
        "## WebSockets (bench/sockets.py)",
        "",
        f"Run on {os.cpu_count()} cores ({cpu}), {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"release build. Resident memory (VmRSS) of a fresh demo process before and with "
        f"{SOCKETS} graphql-transport-ws sockets open, idle or each running one "
        "`sessionEvents` subscription, one process per row; a socket's share is the growth "
        "divided by the sockets.",
        "",
        f"Command: `{' '.join(f'{k}={os.environ[k]}' for k in ('SOCKETS', 'BASELINE_NAME') if k in os.environ)}"
        f"{' BASELINE_BIN=...' if len(builds) > 1 else ''} bench/sockets.py`.".replace("` ", "`"),
        "",
        f"| socket state | build | RSS before | RSS with {SOCKETS} sockets | per socket |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ])
    text = open(OUT).read() if os.path.exists(OUT) else ""
    pattern = re.compile(r"^## WebSockets \(bench/sockets\.py\).*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    with open(OUT, "w") as out:
        out.write(text.rstrip() + "\n")
    print(f"== wrote the section to {OUT}")


if __name__ == "__main__":
    main()
