"""Loopback download throughput, resume cost and hashing speed of fewshot.hub (no network needed).

Run: .venv/bin/python benchmarks/hub_download.py [--mb 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64)
    args = parser.parse_args()
    body = os.urandom(args.mb << 20)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/blob.bin"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FEWSHOT_HOME"] = tmp
        from fewshot.hub import download_url, sha256_of

        t = time.perf_counter()
        path = download_url(url, Path(tmp) / "full.bin", progress=False)
        full = time.perf_counter() - t
        part = Path(tmp) / "resumed.bin.part"
        part.write_bytes(body[: len(body) // 2])
        t = time.perf_counter()
        download_url(url, Path(tmp) / "resumed.bin", progress=False)
        resumed = time.perf_counter() - t
        t = time.perf_counter()
        sha256_of(path)
        hashing = time.perf_counter() - t
    server.shutdown()
    print(f"download {args.mb} MiB (incl. sha256): {full:.2f} s  ({args.mb / full:.0f} MiB/s)")
    print(f"resume from 50%:                 {resumed:.2f} s")
    print(f"sha256 alone:                    {hashing:.2f} s  ({args.mb / hashing:.0f} MiB/s)")


if __name__ == "__main__":
    main()
