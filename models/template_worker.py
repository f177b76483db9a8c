"""The worker process of `models.template_sandbox`: renders one chat template at a time, within limits.

    python -m models.template_worker FD MAX_CHARS TIMEOUT_S

FD is its end of a socket pair. Once started it says `ready`; then it receives JSON bytes
`{"template", "bos", "eos", "messages", "tools"}`, every client string already defused, and answers
bytes: `o` + the UTF-8 prompt, `l` + the limit overrun, or `r` + why the template failed.
Its address space is capped (a huge string is a MemoryError at once, and it goes on serving), its
CPU time is capped a little past TIMEOUT_S before every render (if the server is gone and cannot
kill it, SIGXCPU does), and it exits when the server closes the socket. It imports only jinja2 and
a little of the standard library (no asyncio), since a worker is started again after every kill.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from multiprocessing.connection import Connection

from models.chat_template import ChatFormat, ChatTemplateError, ChatTemplateLimit

MEMORY_HEADROOM = 1 << 30  # on top of what the idle worker maps, and 16 bytes per output character
READY = b"ready"


def serve(conn: Connection, max_chars: int, timeout_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which then closes the socket
    _limit(resource.RLIMIT_CORE, 0)  # SIGXCPU would otherwise dump core
    allowed = MEMORY_HEADROOM + 16 * max_chars
    _limit(resource.RLIMIT_AS, _mapped_bytes() + allowed)
    conn.send_bytes(READY)  # the server's clock for a render starts after this, not during our imports
    while True:
        try:
            request = json.loads(conn.recv_bytes().decode("utf-8", "surrogatepass"))
        except EOFError:  # the server is gone
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _limit(resource.RLIMIT_CPU, int(usage.ru_utime + usage.ru_stime + timeout_s) + 2)
        conn.send_bytes(_answer(request, max_chars, allowed))


def _answer(request: dict, max_chars: int, allowed: int) -> bytes:
    chat_format = ChatFormat(request["template"], request["bos"], request["eos"])
    try:
        prompt = chat_format.render_defused(request["template"], request["messages"], request["tools"], max_chars)
        return b"o" + prompt.encode("utf-8", "surrogatepass")
    except ChatTemplateLimit as exc:
        return b"l" + str(exc).encode()
    except MemoryError:
        return b"l" + f"needed more than the {allowed >> 20} MiB of memory it may use".encode()
    except ChatTemplateError as exc:
        return b"r" + str(exc).encode("utf-8", "replace")
    except Exception as exc:  # TypeError, ZeroDivisionError, RecursionError...: the template is at fault
        return b"r" + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")


def _limit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    resource.setrlimit(which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def _mapped_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: RLIMIT_AS counts from nothing, so allow a baseline
        return 256 << 20


if __name__ == "__main__":
    fd, chars, seconds = sys.argv[1:4]
    serve(Connection(int(fd)), int(chars), float(seconds))
