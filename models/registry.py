"""Which `.gguf` chat models exist in MODELS_DIR, which one is the default, and how each formats chats.

The folder is listed on every call, so a file copied in while the server runs shows up in
`/v1/models` at once. A model's chat format is read from its GGUF metadata once per file version,
and its template is trial-rendered then, in the template sandbox: a template that overruns the time,
output or memory limit (or fails) on a short conversation makes the model refused (ModelLoadFailed),
for its load and for every request, until the file changes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from errors import ModelLoadFailed, ModelNotFound
from models.chat_template import FALLBACK_CHATML, TRIAL_MESSAGES, ChatFormat, ChatTemplateError
from models.template_sandbox import TemplateSandbox

log = logging.getLogger("models.registry")


@dataclass(frozen=True)
class ModelFile:
    id: str  # the file name, e.g. "SmolLM2-135M-Instruct.Q4_1.gguf"
    path: Path
    created: int
    size: int


CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")
CONTROL_TYPES = (2, 3, 4)  # llama.cpp's UNKNOWN (`<unk>`), CONTROL and USER_DEFINED: parsed as special in a prompt
KEPT_VERDICTS = 32


class ModelRegistryError(RuntimeError):
    """MODELS_DIR / MODEL_NAME do not name one usable default model.

    The message is for the log (it names the folder); `reason` is short, stable and names no path (for /health).
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class ModelRegistry:
    def __init__(self, models_dir: Path, default_name: str = "", sandbox: TemplateSandbox | None = None):
        self.models_dir = Path(models_dir)
        self._default_name = default_name
        self.sandbox = sandbox or TemplateSandbox()  # starts its worker processes on first use
        self._verdicts: dict[tuple, ChatFormat | str] = {}  # per file version: the format, or why it is refused
        self._lock = threading.Lock()

    def list(self) -> list[ModelFile]:
        if not self.models_dir.is_dir():
            return []
        files = sorted(p for p in self.models_dir.glob("*.gguf") if p.is_file())
        return [ModelFile(p.name, p, int(p.stat().st_mtime), p.stat().st_size) for p in files]

    def default(self) -> ModelFile:
        files = self.list()
        if self._default_name:
            return self.get(self._default_name)
        if len(files) == 1:
            return files[0]
        if not files:
            raise ModelRegistryError(f"no .gguf model in {self.models_dir.resolve()}; run `make run` or copy one in",
                                     "no .gguf model in MODELS_DIR")
        names = ", ".join(f.id for f in files)
        raise ModelRegistryError(f"{len(files)} models in {self.models_dir}: {names}; set MODEL_NAME to one of them",
                                 "several .gguf models in MODELS_DIR and no MODEL_NAME to choose one")

    def get(self, name: str) -> ModelFile:
        """Look a model up by file name, with or without the `.gguf` suffix."""
        for model in self.list():
            if name in (model.id, model.path.stem):
                return model
        raise ModelNotFound(f"The model `{name}` does not exist", param="model")

    def chat_format(self, model: ModelFile) -> ChatFormat:
        """The model's chat format, trial-rendered once per file version; ModelLoadFailed if it misbehaves."""
        key = (model.path, model.created, model.size)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._trial(model, _read_chat_format(*key))
            with self._lock:
                while len(self._verdicts) >= KEPT_VERDICTS:
                    self._verdicts.pop(next(iter(self._verdicts)))
                self._verdicts[key] = verdict
        if isinstance(verdict, str):
            raise ModelLoadFailed(verdict)
        return verdict

    def _trial(self, model: ModelFile, chat_format: ChatFormat) -> ChatFormat | str:
        try:
            self.sandbox.render(chat_format, list(TRIAL_MESSAGES))
        except ChatTemplateError as exc:
            refusal = f"{model.id} is refused: its chat template failed on a short test conversation: {exc}"
            log.error("%s", refusal)
            return refusal
        return chat_format


@lru_cache(maxsize=32)
def _read_chat_format(path: Path, _mtime: int, _size: int) -> ChatFormat:
    import gguf  # heavy import, needed only here

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # a truncated or foreign file
        raise ModelLoadFailed(f"{path.name} is not a readable GGUF file: {exc}") from None
    template = _string_field(reader, "tokenizer.chat_template")
    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def token(key: str) -> str:
        field = reader.fields.get(key)
        if field is None or tokens is None:
            return ""
        index = int(field.parts[field.data[0]][0])
        return bytes(tokens.parts[tokens.data[index]]).decode("utf-8", "replace")

    bos, eos = token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")
    controls = _control_tokens(reader, tokens)
    if template is None:
        return ChatFormat(FALLBACK_CHATML, bos, eos, from_file=False, control_tokens=controls + CHATML_MARKERS)
    # llama.cpp's converter writes a model's named templates beside the default one (Hermes 3: "tool_use").
    tool_template = _string_field(reader, "tokenizer.chat_template.tool_use")
    return ChatFormat(template, bos, eos, control_tokens=controls, tool_template=tool_template)


def _control_tokens(reader, tokens) -> tuple[str, ...]:
    """Texts of the tokens GGUF marks unknown (2), control (3) or user-defined (4): they must not be typed in."""
    types = reader.fields.get("tokenizer.ggml.token_type")
    if types is None or tokens is None:
        return ()
    found = []
    for index, part in enumerate(types.data):
        if int(types.parts[part][0]) in CONTROL_TYPES:
            text = bytes(tokens.parts[tokens.data[index]]).decode("utf-8", "replace")
            if len(text) > 1:
                found.append(text)
    return tuple(sorted(found, key=len, reverse=True))


def _string_field(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
