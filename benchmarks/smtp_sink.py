"""An SMTP server that accepts and discards everything, in its own process (its own GIL).

    uv run python -m benchmarks.smtp_sink --port 2525 [--count-file PATH]

aiosmtpd (the test suite's server) without parsing or keeping messages. On
SIGTERM or SIGINT it writes ``<messages> <bytes>`` to ``--count-file`` and exits.
:func:`sink_ceiling` and :func:`bare_smtplib` measure what bare smtplib gets from it.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import signal
import smtplib
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        self.bytes += len(envelope.original_content or envelope.content or b"")
        return "250 2.0.0 OK"


def _ceiling_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "billing@example.com"
    msg["To"] = "someone@example.com"
    msg["Subject"] = "ceiling"
    msg.set_content("x" * 3000)
    return msg


def sink_ceiling(port: int, n: int) -> dict[str, Any]:
    """Bare smtplib, one client thread, one connection per message (as SmtpSender did before pooling)."""
    msg = _ceiling_message()
    t0 = time.perf_counter()
    for _ in range(n):
        s = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=10)
        s.ehlo()
        s.send_message(msg)
        s.close()
    wall = time.perf_counter() - t0
    return {"messages": n, "rate": round(n / wall, 1), "ms_per_message": round(1000 * wall / n, 3)}


def bare_smtplib(port: int, n: int, threads: int) -> dict[str, Any]:
    """Bare smtplib, ``threads`` client threads each keeping one connection: what the sink takes at best.

    The same server and message size as the product's run, without the product: the
    figure the delivered rate is compared with.
    """
    msg = _ceiling_message().as_bytes(policy=email.policy.SMTP)
    per = n // threads

    def work() -> None:
        s = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=10)
        s.ehlo()
        for _ in range(per):
            s.sendmail("billing@example.com", ["someone@example.com"], msg)
        s.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    return {"messages": per * threads, "threads": threads, "rate": round(per * threads / wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count-file", type=Path)
    args = p.parse_args()
    sink = Sink()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # A fixed hostname: the default getfqdn() can stall on hosts with slow DNS.
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(sink, hostname="sink.bench", ident="bench-sink", decode_data=False),
            host=args.host,
            port=args.port,
            backlog=1024,
        )
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"smtp sink listening on {args.host}:{args.port}", flush=True)
    loop.run_until_complete(stop.wait())
    server.close()
    if args.count_file:
        args.count_file.write_text(f"{sink.messages} {sink.bytes}\n")
    print(f"smtp sink: {sink.messages} messages, {sink.bytes} bytes", flush=True)


if __name__ == "__main__":
    main()
