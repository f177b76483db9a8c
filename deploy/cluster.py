"""N replicas of the server behind Debian's nginx, on one machine: `make cluster` / `make cluster-stop`.

    REPLICAS=2 PORT=8000 python deploy/cluster.py start     # replicas on 127.0.0.1:8001..800N, nginx on PORT
    python deploy/cluster.py stop

Every replica gets the same keys and models (the environment passes through; without
`API_KEYS` one key is made, printed once, and kept in `data/cluster/api_key` for Prometheus).
Replica 1 is the training-data writer: it alone has `TRAINING_DATA_DIR`, and nginx sends
`/v1/training/*` to it; the others get a folder of their own that nothing writes. All share one
`RESPONSES_DB` (stored `/v1/responses`), replica 1's. nginx's
configuration is rendered from `deploy/nginx.conf.template`, Prometheus's from
`deploy/prometheus.yml.template`, both into `data/cluster/` with the logs and pid files.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RUN_DIR = ROOT / "data" / "cluster"
READY_TIMEOUT_S = 300.0


@dataclass
class Cluster:
    run_dir: Path
    port: int
    replica_ports: list[int]
    api_key: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.replica_ports[index]}"

    def stop(self) -> None:
        stop(self.run_dir)


def nginx_binary_or_none() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None)


def nginx_binary() -> str:
    found = nginx_binary_or_none()
    if found is None:
        raise SystemExit("nginx is not installed: `make cluster` installs Debian's nginx (apt-get install nginx)")
    return found


def start(replicas: int, port: int, *, run_dir: Path = RUN_DIR, listen_host: str = "127.0.0.1",
          env: dict[str, str] | None = None, replica_ports: list[int] | None = None) -> Cluster:
    """Start the replicas, wait until each is healthy, then nginx; a failure stops what started."""
    env = {**os.environ, **(env or {})}
    run_dir.mkdir(parents=True, exist_ok=True)
    stop(run_dir)  # a cluster left running from this folder
    api_key = env.get("API_KEYS", "").split(",")[0].strip()
    if not api_key:
        api_key = "sk-local-" + secrets.token_urlsafe(24)
        env["API_KEYS"] = api_key
        print(f"API key for every replica (also in {run_dir / 'api_key'}): {api_key}", flush=True)
    key_file = run_dir / "api_key"
    key_file.write_text(api_key + "\n")
    key_file.chmod(0o600)
    ports = replica_ports or [port + i for i in range(1, replicas + 1)]
    cluster = Cluster(run_dir, port, ports, api_key)
    try:
        for index, replica_port in enumerate(ports, start=1):
            cluster.processes.append(_start_replica(index, replica_port, env, run_dir))
        for index, process in enumerate(cluster.processes):
            _wait_healthy(process, cluster.replica_url(index), run_dir / f"replica-{index + 1}.log")
        _render(run_dir, listen=f"{listen_host}:{port}", ports=ports, max_body=int(env.get("MAX_BODY_BYTES", 4 * 2**20)))
        subprocess.run([nginx_binary(), "-p", str(run_dir), "-c", str(run_dir / "nginx.conf")], check=True)
    except BaseException:
        stop(run_dir)
        raise
    return cluster


def stop(run_dir: Path = RUN_DIR) -> None:
    """nginx first (no new requests), then every replica with SIGTERM (they drain and exit)."""
    nginx_pid = run_dir / "nginx.pid"
    if nginx_pid.exists():
        _signal(nginx_pid, signal.SIGQUIT)
    for pid_file in sorted(run_dir.glob("replica-*.pid")):
        _signal(pid_file, signal.SIGTERM)


def _start_replica(index: int, port: int, env: dict[str, str], run_dir: Path) -> subprocess.Popen:
    training = env.get("TRAINING_DATA_DIR", str(ROOT / "data" / "training"))
    own = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "REPLICA_NAME": f"replica-{index}",
        # replica 1 writes the datasets (nginx sends it /v1/training/*); the others' folders stay empty
        "TRAINING_DATA_DIR": training if index == 1 else str(run_dir / f"replica-{index}" / "training"),
        # one file of stored responses for all (SQLite's WAL across processes): replica 1's default one
        "RESPONSES_DB": env.get("RESPONSES_DB") or str(Path(training).parent / "responses.sqlite3"),
        "PYTHONUNBUFFERED": "1",
    }
    log = (run_dir / f"replica-{index}.log").open("wb")
    process = subprocess.Popen([sys.executable, str(ROOT / "server.py")], cwd=ROOT, env={**env, **own},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (run_dir / f"replica-{index}.pid").write_text(f"{process.pid}\n")
    return process


def _wait_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a replica exited with {process.returncode}; its log: {log}\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"a replica did not become healthy in {READY_TIMEOUT_S:.0f} s; its log: {log}")


def _render(run_dir: Path, *, listen: str, ports: list[int], max_body: int) -> None:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in ports)
    # As root, nginx's workers would run as www-data, which may not reach a private run folder.
    user_line = "user root;\n" if os.geteuid() == 0 else ""
    nginx = _fill(DEPLOY / "nginx.conf.template",
        USER_LINE=user_line, RUN_DIR=run_dir, LISTEN=listen, REPLICA_SERVERS=servers, CLIENT_MAX_BODY=2 * max_body,
        WRITER_SERVER=f"        server 127.0.0.1:{ports[0]};",
    )
    (run_dir / "nginx.conf").write_text(nginx)
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in ports)
    prometheus = _fill(DEPLOY / "prometheus.yml.template",
        TARGETS=targets, KEY_FILE=run_dir / "api_key", RULES=DEPLOY / "prometheus-rules.yml",
    )
    (run_dir / "prometheus.yml").write_text(prometheus)


def _fill(template: Path, **values: object) -> str:
    """`template` with each `${NAME}` replaced (nginx's own `$variables` stay as they are)."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", str(value))
    if "${" in text:
        raise ValueError(f"{template.name}: a placeholder was left unfilled: {text[text.index('${'):][:40]!r}")
    return text


def _signal(pid_file: Path, sig: int) -> None:
    """Send `sig` to the process named in `pid_file` and wait (up to 60 s) until it has exited."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, sig)
    except (ValueError, ProcessLookupError, FileNotFoundError):
        pid = None
    deadline = time.monotonic() + 60
    while pid is not None and not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def _exited(pid: int) -> bool:
    """Gone, or a zombie: reaped here if this process started it, else waiting for its parent (or init)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:  # not our child
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state == "Z"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    args = parser.parse_args()
    if args.action == "stop":
        stop()
        print("cluster stopped")
        return
    replicas, port = int(os.environ.get("REPLICAS", "2")), int(os.environ.get("PORT", "8000"))
    cluster = start(replicas, port, listen_host=os.environ.get("CLUSTER_HOST", "127.0.0.1"))
    print(f"{replicas} replicas on ports {', '.join(map(str, cluster.replica_ports))}; nginx on {cluster.url}")
    print(f"Prometheus configuration: {cluster.run_dir / 'prometheus.yml'}; stop with `make cluster-stop`")


if __name__ == "__main__":
    main()
