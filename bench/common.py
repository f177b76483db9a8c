"""Helpers shared by the benchmarks: options, statistics, tables, result files (servers: bench/servers.py).

Every benchmark module exposes `add_arguments(parser)` (its own options) and `main(args) -> rows`
(a list of flat dicts, one per measured configuration). `bench/run_all.py` runs them in turn.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the project's packages (models, settings...) for any working directory
    sys.path.insert(0, str(ROOT))

from metrics.window import percentile as metrics_percentile  # noqa: E402 - after the path is set

RESULTS_DIR = ROOT / "bench" / "results"


# ---- command-line options shared by every benchmark ------------------------------------------


def benchmark_main(argv, doc: str, add_arguments, run) -> list[dict]:
    """A benchmark's `main`: standalone (`argv`, default sys.argv) or from bench/run_all.py (its Namespace)."""
    if isinstance(argv, argparse.Namespace):
        return run(argv)
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common")
    group.add_argument("--quick", action="store_true", help="small numbers for a smoke run (seconds, not minutes)")
    group.add_argument("--runs", type=int, default=None, help="measured repetitions per configuration")
    group.add_argument(
        "--threads", type=int, default=None, help="engine threads for every system (default: N_THREADS or all cores)"
    )
    group.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <benchmark>.json is written")
    group.add_argument("--no-save", action="store_true", help="do not write result files")
    group.add_argument("--json", action="store_true", help="also print every row as a JSON line at the end")


def engine_threads(args: argparse.Namespace) -> int:
    if getattr(args, "threads", None):
        return args.threads
    from_env = os.environ.get("N_THREADS", "")
    return int(from_env) if from_env.strip() not in ("", "0") else (os.cpu_count() or 1)


# ---- statistics ------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The server's own percentile (linear interpolation, as numpy's default); NaN for no values."""
    value = metrics_percentile(list(values), q)
    return math.nan if value is None else value


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or not denominator or math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


def times_x(value: float | None) -> str:
    """A ratio as "1.23x", or "-" when there is none."""
    return "-" if value is None else f"{value:.2f}x"


# ---- output ----------------------------------------------------------------------------------


def _cell(value: object, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: list[dict], columns: list[tuple], digits: int = 1) -> str:
    """A Markdown table of `rows`; `columns` are (key, heading) or (key, heading, digits) tuples.

    Missing values print as '-'; floats with `digits` decimals unless the column says otherwise.
    """
    keys = [c[0] for c in columns]
    heads = [c[1] for c in columns]
    places = [c[2] if len(c) > 2 else digits for c in columns]
    cells = [[_cell(row.get(key), d) for key, d in zip(keys, places)] for row in rows]
    widths = [max([len(head)] + [len(r[i]) for r in cells]) for i, head in enumerate(heads)]
    numeric = [all(_is_number(row.get(key)) for row in rows if row.get(key) is not None) for key in keys]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(heads), rule] + [line(r) for r in cells])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` (all its threads) so far; None if unknown."""
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:  # noqa: BLE001 - psutil missing or the process gone: the figure is optional
        return None


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def busy_machine_warning() -> str | None:
    """A warning when other processes already use a good part of the cores (figures will be noisy)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cpus = os.cpu_count() or 1
    if load > 0.5 * cpus:
        return (f"load average {load:.2f} on {cpus} cpus before starting: other processes compete for the cores, "
                "so these figures are noisy (llama.cpp's spinning worker threads suffer most when threads = cores)")
    return None


def machine_info() -> dict:
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def save_results(name: str, rows: list[dict], args: argparse.Namespace, extra: dict | None = None) -> Path | None:
    """Write `<results-dir>/<name>.json` (git-ignored): machine info, options and rows."""
    if getattr(args, "no_save", False):
        return None
    directory = Path(getattr(args, "results_dir", RESULTS_DIR))
    directory.mkdir(parents=True, exist_ok=True)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not callable(v)}
    document = {"benchmark": name, "machine": machine_info(), "options": options, **(extra or {}), "rows": rows}
    path = directory / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def publish(name: str, rows: list[dict], args: argparse.Namespace, extra: dict | None = None) -> list[dict]:
    """A benchmark's last step: write the result file (unless `--no-save`), say where, print the rows
    as JSON lines with `--json`; returns `rows`."""
    path = save_results(name, rows, args, extra)
    if path is not None:
        print(f"rows written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if getattr(args, "json", False):
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    return rows
