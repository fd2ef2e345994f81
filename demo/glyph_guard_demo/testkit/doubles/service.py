"""A tiny service for remediator tests: GET /health on a port, optionally with a child process.

Usage: service.py PORT MARKER [--child] [--child-ignores-term] [--report FILE] [--delay SECONDS]
                  [--term-delay SECONDS [--term-report FILE]] [--die-after SECONDS]
The child's command line does not carry MARKER, like vLLM's EngineCore beside `vllm serve`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHILD = """
import signal, sys, time
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    time.sleep(1)
"""


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/health" else 404
        body = b"ok\n" if code == 200 else b"no\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("marker")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--child-ignores-term", action="store_true")
    parser.add_argument("--report")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--term-delay", type=float, help="on SIGTERM, exit only after this")
    parser.add_argument("--term-report", help="with --term-delay: create FILE on SIGTERM")
    parser.add_argument("--die-after", type=float, help="exit with 1 this long after serving")
    args = parser.parse_args()
    if args.term_delay is not None:
        delay, report = args.term_delay, args.term_report

        def on_term(*_: object) -> None:
            if report:
                open(report, "w").close()
            threading.Timer(delay, os._exit, (0,)).start()

        signal.signal(signal.SIGTERM, on_term)
    if args.die_after is not None:
        threading.Timer(args.delay + args.die_after, os._exit, (1,)).start()
    child = None
    if args.child or args.child_ignores_term:
        mode = "ignore" if args.child_ignores_term else "default"
        child = subprocess.Popen([sys.executable, "-c", CHILD, mode, "engine-core"])
    time.sleep(args.delay)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Health)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as out:
            facts = {"pid": os.getpid(), "child": child and child.pid, "cwd": os.getcwd()}
            json.dump({**facts, "env": os.environ.get("GLYPH_TEST_ENV")}, out)
    server.serve_forever()


if __name__ == "__main__":
    main()
