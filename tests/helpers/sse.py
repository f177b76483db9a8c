"""Client-side checks shared by the fault and soak tests: SSE framing, error envelopes, a slow raw reader."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx

DONE = "[DONE]"


def sse_events(raw: str) -> list:
    """The decoded `data:` payloads of a whole SSE body (`[DONE]` stays a string), checking the framing."""
    assert raw.endswith("\n\n"), f"an SSE body ends with a blank line: {raw[-200:]!r}"
    events = []
    for event in raw[:-2].split("\n\n"):
        assert event.startswith("data: ") and "\n" not in event, event
        payload = event[len("data: "):]
        events.append(payload if payload == DONE else json.loads(payload))
    return events


def assert_envelope(response: httpx.Response, *statuses: int) -> dict:
    """The OpenAI error envelope, with one of `statuses`; returns the inner `error` object."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in response.text
    if response.status_code == 429:
        assert int(response.headers["retry-after"]) >= 1
    return body["error"]


def assert_error_event(event: dict) -> dict:
    assert set(event) == {"error"} and set(event["error"]) == {"message", "type", "param", "code"}, event
    return event["error"]


class SlowReader:
    """A raw-socket SSE client that reads `chunk` bytes every `interval_s`: a stalled or slow consumer.

    The receive buffer is made small so that the server's writes hit backpressure almost at once.
    """

    def __init__(self, base_url: str, path: str, body: dict, api_key: str, *, chunk: int = 16, interval_s: float = 0.25):
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        payload = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
        self.sock.sendall(head.encode() + payload)
        self.received = bytearray()
        self._chunk, self._interval = chunk, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_slowly, daemon=True)
        self._thread.start()

    def _read_slowly(self) -> None:
        self.sock.settimeout(self._interval)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(self._chunk)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self.received += data
            time.sleep(self._interval)

    def close(self) -> None:
        """Leave without reading the rest (a client that gives up)."""
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def response_events(raw: str) -> list[dict]:
    """The events of a `/v1/responses` stream: each an `event:` line naming the `data:` line's type."""
    assert raw.endswith("\n\n"), f"an SSE body ends with a blank line: {raw[-200:]!r}"
    events = []
    for block in raw[:-2].split("\n\n"):
        head, data = block.split("\n")
        assert head.startswith("event: ") and data.startswith("data: "), block[:300]
        event = json.loads(data[len("data: "):])
        assert event["type"] == head[len("event: "):], block[:300]
        events.append(event)
    return events
