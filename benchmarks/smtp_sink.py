"""An SMTP server that accepts and discards everything, in its own process (its own GIL).

    uv run python -m benchmarks.smtp_sink --port 2525 [--count-file PATH]

aiosmtpd (the test suite's server) without parsing or keeping messages. On
SIGTERM or SIGINT it writes ``<messages> <bytes>`` to ``--count-file`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
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
