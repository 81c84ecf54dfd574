"""Servers on 127.0.0.1 for tests and benchmarks: a JSON HTTP server whose answers a subclass
scripts, and a real vLLM OpenAI server started as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx


class JSONServer:
    """A real HTTP server on a free loopback port. Subclasses answer `GET` in `get(handler)` and
    `POST` in `post(handler, body)` (the parsed JSON body), replying with `send`; use as a context
    manager."""

    def __init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.get(self)

            def do_POST(self) -> None:
                server.post(self, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer a GET (default: 501, as http.server does)."""
        handler.send_error(501)

    def post(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        """Reply with `payload` as JSON (bytes are sent as they are); a client that hung up is ignored."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and hung up

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> JSONServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_openai_server(
    model: str, log_path: Path, *args: str, timeout_s: float = 300, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A real vLLM OpenAI server for `model` on a free loopback port (float32, eager, qwen3 reasoning
    parser, 1 GiB of KV cache: by default the CPU worker asks for 92 % of all RAM), with `args` added
    to its command line and `env` to its environment; yields its /v1 base URL once `GET /v1/models`
    answers, and stops it after. RuntimeError with the log's tail when it exits or is not up within
    `timeout_s` seconds."""
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    command += ["--host", "127.0.0.1", "--port", str(port), "--reasoning-parser", "qwen3"]
    command += ["--dtype", "float32", "--enforce-eager", *args]
    environment = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(server, base_url, log_path, timeout_s)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_until_up(server: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"vllm server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    raise RuntimeError(f"vllm server not up after {timeout_s} s:\n{log_path.read_text()[-3000:]}")
