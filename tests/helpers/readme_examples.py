"""The project's own README's curl examples, run as written against a test server.

Each curl command of a ```bash block is one example; the block's variable assignments before it
(`KEY=sk-local-123`) run with it. Only the address changes (test servers listen on free ports), plus
whatever `replace` names. `| jq` is dropped where jq is not installed; the JSON is the same.
Nothing here reads a file outside the repository.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

README = Path(__file__).resolve().parents[2] / "README.md"  # the repository's own README
README_KEY = "sk-local-123"  # the key every README example sends
README_ADDRESS = "http://127.0.0.1:8000"
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
DATA_OPTIONS = ("-d", "--data", "--data-raw", "--data-binary")


@dataclass(frozen=True)
class CurlExample:
    command: str  # what runs: the block's assignments so far, then the curl command as written
    method: str  # -X, else POST with a body, else GET
    path: str
    query: dict[str, list[str]]
    body: dict | list | None  # the JSON that -d sends

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True


def _complete(text: str) -> bool:
    """Whether `text` is a whole shell command: no continuation backslash, no open quote."""
    if text.endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # no closing quotation
        return False
    return True


def _parse(curl: str, setup: list[str]) -> CurlExample:
    words = shlex.split(curl.replace("\\\n", " "), comments=True)
    method, url, body = None, None, None
    for i, word in enumerate(words):
        if word in ("-X", "--request"):
            method = words[i + 1]
        elif word in DATA_OPTIONS:
            body = json.loads(words[i + 1])
        elif word.startswith(("http://", "https://")):
            url = urlsplit(word)
    assert url is not None, f"a README curl example without a URL: {curl}"
    method = method or ("POST" if body is not None else "GET")
    return CurlExample("\n".join([*setup, curl]), method.upper(), url.path, parse_qs(url.query), body)


def all_curl_examples(readme: Path | None = None) -> list[CurlExample]:
    """Every curl command of every ```bash block of the README, in order."""
    examples = []
    for block in re.findall(r"```bash\n(.*?)```", (readme or README).read_text(encoding="utf-8"), flags=re.S):
        setup: list[str] = []
        current: list[str] = []
        for line in block.splitlines():
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            current.append(line.rstrip())
            text = "\n".join(current)
            if not _complete(text):
                continue
            current = []
            if ASSIGNMENT.match(text):
                setup.append(text)
            elif re.match(r"curl\s", text):
                examples.append(_parse(text, setup))
        assert not current, f"an unfinished command at the end of a README block: {current}"
    return examples


def _path_pattern(template: str) -> re.Pattern:
    """"/v1/training/datasets/{name}" matches one path segment where the braces are."""
    parts = re.split(r"\{[^}/]+\}", template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts) + r"\Z")


def readme_curl_examples(*paths: str, method: str | None = None) -> list[CurlExample]:
    """The README's curl examples whose URL path is one of `paths` (and whose method is `method`)."""
    patterns = [_path_pattern(path) for path in paths]
    return [example for example in all_curl_examples()
            if any(p.match(example.path) for p in patterns) and method in (None, example.method)]


def run_readme_example(example: CurlExample | str, base_url: str, replace: dict[str, str] | None = None,
                       timeout: float = 300) -> str:
    """Run one example with bash (pipefail) and return its stdout."""
    command = example.command if isinstance(example, CurlExample) else example
    assert README_ADDRESS in command
    command = command.replace(README_ADDRESS, base_url)
    for old, new in (replace or {}).items():
        command = command.replace(old, new)
    if shutil.which("jq") is None:
        command = command.replace("| jq", "")
    completed = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout
