"""Chat templates rendered in worker processes, each render bounded in time, output and memory.

A template comes from a model file. jinja2's sandbox keeps it from Python's internals, but not
from looping for hours (`range(100000)` inside `range(100000)`) or building an 8 GiB string
(`'x' * 2**33`), and a Python thread running one cannot be stopped. So templates run in small
worker processes (`models/template_worker.py`, which imports only jinja2 and the standard library):

* the parent waits `timeout_s` for the answer, then kills the worker (SIGKILL) and starts another;
* the worker's address space is capped (RLIMIT_AS), so a huge string is a MemoryError at once;
* its CPU time is capped before every render (RLIMIT_CPU), so a render outlives a dead parent by
  seconds at most; it also exits when its parent's end of the socket closes;
* the output is streamed with `generate()` and cut past `max_chars`.

Each thread of a small pool owns one worker, so a slow render holds up only its own thread. Both
ways are bytes, never a pickle: the request is JSON (the template, its tokens, the defused messages
and tools), the answer `o` + UTF-8 text, or `r`/`l` + a reason.

Measured on the default model (SmolLM2's template, a chat of four short messages) on a 2-core
machine with a load average of 8-12: a render through the sandbox takes 0.25 ms (median; p90
1.4-2.8 ms) against 0.04 ms in-process; `GenerationService.chat_prompt` as a whole 0.5-1.3 ms
(median) against 0.2 ms when it rendered on the event loop. A 4 MB message takes 105-135 ms
(40-50 ms in-process), off the event loop. A new worker is ready in 0.2-0.5 s, once per pool
thread and after every kill; the time limit starts after that.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection, Pipe
from pathlib import Path

from models.chat_template import MAX_CHARS, ChatFormat, ChatTemplateError, ChatTemplateLimit
from models.template_worker import READY

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0  # a busy machine; a worker that does not start is the server's fault, not the template's


class TemplateSandbox:
    def __init__(self, *, timeout_s: float = 2.0, max_chars: int = MAX_CHARS, workers: int = 2):
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="chat-template")
        self._local = threading.local()  # each pool thread's own worker
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        # Kills the workers on close(), when the sandbox is collected, or at exit: none outlives its sandbox.
        self._stop_workers = weakref.finalize(self, _stop, self._workers, self._lock)

    def submit(self, chat_format: ChatFormat, messages: list[dict], tools: list[dict] | None = None) -> Future:
        """The rendered prompt, or ChatTemplateError (ChatTemplateLimit for a time, output or memory overrun).

        `messages` and `tools` as Hugging Face templates take them (see models/chat_template.py)."""
        return self._pool.submit(self._render, chat_format, list(messages), tools)

    def render(self, chat_format: ChatFormat, messages: list[dict], tools: list[dict] | None = None) -> str:
        return self.submit(chat_format, messages, tools).result()

    async def render_async(self, chat_format: ChatFormat, messages: list[dict], tools: list[dict] | None = None) -> str:
        return await asyncio.wrap_future(self.submit(chat_format, messages, tools))

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._stop_workers()

    def _render(self, chat_format: ChatFormat, messages: list[dict], tools: list[dict] | None) -> str:
        # Defused here: the pattern is compiled once per format, outside the time limit (6,500 tokens: 0.8 s).
        safe, safe_tools = chat_format.defuse_inputs(messages, tools)
        request = {"template": chat_format.template_for(messages, tools), "bos": chat_format.bos_token,
                   "eos": chat_format.eos_token, "messages": safe, "tools": safe_tools}
        # surrogatepass: a lone surrogate in a message reaches the template as it was, as a pickle carried it.
        payload = json.dumps(request, ensure_ascii=False).encode("utf-8", "surrogatepass")
        worker = self._worker()
        try:
            worker.conn.send_bytes(payload)
        except OSError:  # it died while idle (killed from outside): once more with a new one
            self._discard(worker)
            worker = self._worker()
            worker.conn.send_bytes(payload)
        if not worker.conn.poll(self.timeout_s):
            self._discard(worker)
            raise ChatTemplateLimit(f"did not finish within {self.timeout_s:g} s")
        try:
            reply = worker.conn.recv_bytes(4 * self.max_chars + 1024)
        except (EOFError, OSError):  # killed by its CPU limit, or crashed
            self._discard(worker)
            raise ChatTemplateLimit("stopped its worker process (CPU time or a crash)") from None
        kind, text = reply[:1], reply[1:].decode("utf-8", "surrogatepass")
        if kind == b"o":
            return text
        raise (ChatTemplateLimit if kind == b"l" else ChatTemplateError)(text)

    def _worker(self) -> _Worker:
        worker = getattr(self._local, "worker", None)
        if worker is None:
            if self._closed:
                raise RuntimeError("the template sandbox is closed")  # not the template's fault: no verdict
            worker = self._local.worker = _Worker.start(self.max_chars, self.timeout_s)
            with self._lock:
                self._workers.add(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        self._local.worker = None
        with self._lock:
            self._workers.discard(worker)
        worker.kill()


def _stop(workers: set[_Worker], lock: threading.Lock) -> None:
    with lock:
        stopping = list(workers)
        workers.clear()
    for worker in stopping:
        worker.kill()


class _Worker:
    def __init__(self, process: subprocess.Popen, conn: Connection):
        self.process = process
        self.conn = conn

    @classmethod
    def start(cls, max_chars: int, timeout_s: float) -> _Worker:
        ours, theirs = Pipe()
        process = subprocess.Popen(
            [sys.executable, "-m", "models.template_worker", str(theirs.fileno()), str(max_chars), str(timeout_s)],
            cwd=ROOT, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
        )
        theirs.close()
        worker = cls(process, ours)
        try:
            if ours.poll(START_TIMEOUT_S) and ours.recv_bytes(64) == READY:
                return worker
        except (EOFError, OSError):
            pass
        worker.kill()
        raise RuntimeError(f"the chat template worker did not start (exit code {process.returncode})")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.conn.close()
