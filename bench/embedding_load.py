"""The embedding load generator: closed-loop clients that each send one sentence per request.

Used on this server and on infinity alike; `drive_server` returns a `Measurement` (inputs,
wall time, latencies, errors, and the CPU the client and the server used).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httpx
import orjson

from bench import peers
from bench.common import process_cpu_seconds
from bench.servers import ServerProcess

MODEL = "all-MiniLM-L6-v2"


def endpoint_path(server: ServerProcess) -> str:
    """infinity serves its OpenAI-style route without the /v1 prefix."""
    return "/embeddings" if server.name == peers.INFINITY.name else "/v1/embeddings"


@dataclass
class Measurement:
    inputs: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: list[str] = field(default_factory=list)
    client_cpu: float = 0.0  # seconds of CPU used by this process (for raw encode: the model's work)
    server_cpu: float | None = None  # seconds of CPU used by the server process

    @property
    def throughput(self) -> float:
        return self.inputs / self.wall if self.wall > 0 else float("nan")


class LiteConnection:
    """One keep-alive HTTP/1.1 connection that POSTs pre-encoded JSON bodies (a load generator)."""

    def __init__(self, server: ServerProcess):
        self.host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.head = (f"POST {endpoint_path(server)} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                     f"Authorization: Bearer {server.api_key}\r\nContent-Type: application/json\r\n")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def request(self, body: bytes) -> bytes:
        return f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    async def post(self, raw_request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(raw_request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, length = int(head[9:12]), None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                self.writer.close()
                self.writer = None  # reconnect for the next request
        if length is None:
            raise RuntimeError("the lite client reads Content-Length responses only: " + head.decode(errors="replace"))
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def drive_server(server: ServerProcess, texts: list[str], clients: int, seconds: float, max_requests: int,
                       kind: str = "lite") -> Measurement:
    """`clients` closed-loop clients, each sending one sentence per request, for `seconds`."""
    bodies = [orjson.dumps({"model": MODEL, "input": t}) for t in texts]  # encoded up front: less client CPU
    if kind == "lite":
        connections = [LiteConnection(server) for _ in range(clients)]
        payloads = [connections[0].request(b) for b in bodies]
        posts = [lambda i, c=c: c.post(payloads[i]) for c in connections]
        closing = [c.close for c in connections]
    else:
        headers = {**server.headers(), "Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        client = httpx.AsyncClient(base_url=server.base_url, headers=headers, limits=limits, timeout=120)

        async def post_httpx(i: int) -> tuple[int, bytes]:
            response = await client.post(endpoint_path(server), content=bodies[i])
            return response.status_code, response.content

        posts = [post_httpx] * clients
        closing = [client.aclose]
    try:
        await asyncio.gather(*(post(k % len(bodies)) for k, post in enumerate(posts)))  # warm-up: open every connection
        out = Measurement()
        counter = itertools.count()
        deadline = time.perf_counter() + seconds

        async def worker(post) -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                if i >= max_requests:
                    return
                t0 = time.perf_counter()
                status, body = await post(i % len(bodies))
                if status == 200:
                    out.latencies.append(time.perf_counter() - t0)
                    out.inputs += 1
                else:
                    out.errors.append(f"{status}: {body[:200].decode(errors='replace')}")

        cpu, server_cpu, started = time.process_time(), process_cpu_seconds(server.process.pid), time.perf_counter()
        await asyncio.gather(*(worker(post) for post in posts))
        out.wall = time.perf_counter() - started
        out.client_cpu = time.process_time() - cpu
        after = process_cpu_seconds(server.process.pid)
        out.server_cpu = after - server_cpu if after is not None and server_cpu is not None else None
    finally:
        for close in closing:
            await close()
    return out
