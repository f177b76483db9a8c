"""The original README's curl examples, run as written against a test server.

Only the address changes (test servers listen on free ports), plus whatever `replace` names (the
README's placeholder model file). `| jq` is dropped where jq is not installed; the JSON is the same.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "shared" / "spec" / "original-readme.md"  # shared/ sits beside the clone
README_KEY = "sk-local-123"  # the key every README example sends
README_ADDRESS = "http://127.0.0.1:8000"


def readme_curl_examples(*paths: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    return [block for block in blocks if "curl" in block and any(path in block for path in paths)]


def run_readme_example(command: str, base_url: str, replace: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run one example with bash (pipefail) and return its stdout."""
    assert README_ADDRESS in command
    command = command.replace(README_ADDRESS, base_url)
    for old, new in (replace or {}).items():
        command = command.replace(old, new)
    if shutil.which("jq") is None:
        command = command.replace("| jq", "")
    completed = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout
