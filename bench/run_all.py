"""The one entry point for every benchmark: runs them in turn and prints each one's table.

    python bench/run_all.py [--quick] [--only generation,embeddings] [benchmark options...]

A benchmark is a module in `bench/` with `main(args) -> list[dict]` (one row per measured
configuration; it prints its own table and writes `bench/results/<name>.json`) and, optionally,
`add_arguments(parser)` for its own options. Adding one is one line in BENCHMARKS.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run_all.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, add_common_arguments, machine_info

# name -> module; run in this order.
BENCHMARKS = {
    "generation": "bench.generation",
    "embeddings": "bench.embeddings",
    "embedding_accuracy": "bench.embedding_accuracy",
    "training": "bench.training",
    "multiturn": "bench.multiturn",
    "cluster": "bench.cluster",
    "decode": "bench.decode",
}


def _modules(names: list[str]) -> dict:
    modules = {}
    for name in names:
        try:
            modules[name] = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            if exc.name != BENCHMARKS[name]:
                raise
            print(f"note: benchmark `{name}` ({BENCHMARKS[name]}) does not exist yet; skipping it", flush=True)
    return modules


def build_parser(modules: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    add_common_arguments(parser)
    for module in modules.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--only", default="")
    known, _ = pre.parse_known_args(argv)
    names = [n.strip() for n in known.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    modules = _modules(names)
    args = build_parser(modules).parse_args(argv)

    all_rows: list[dict] = []
    failed: list[str] = []
    for name, module in modules.items():
        print(f"\n=== {name} ===", flush=True)
        try:
            # every benchmark gets its own copy: main() may fill in defaults it alone understands
            all_rows += module.main(argparse.Namespace(**vars(args))) or []
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
    if not args.no_save and all_rows:
        directory = Path(args.results_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "all.json"
        path.write_text(json.dumps({"machine": machine_info(), "rows": all_rows}, indent=2) + "\n")
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"\nall rows written to {shown}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
