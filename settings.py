"""Every setting of the server, typed, described and read once from the environment.

`Settings.from_env()` is the only place that reads `os.environ`; everything else receives the
`Settings` object. Variable names are the field names in upper case (`models_dir` is
`MODELS_DIR`). The README's configuration table is generated from the descriptions here
(`python settings.py` prints it).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Server
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    reload: bool = Field(False, description="Restart the server when a source file changes (development).")
    replica_name: str = Field(
        "", max_length=64, pattern=r"^[A-Za-z0-9._-]*$",
        description="This replica's name behind a load balancer: sent as `X-Replica`, shown by `/metrics` and `/status`.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger bodies get 413."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty turns CORS off."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Comma-separated extra names accepted in the `Host` header (port ignored); other hosts get 421. "
            "Always accepted: `localhost`, `127.0.0.1`, `[::1]`, `HOST`, and with `HOST=0.0.0.0` or `::` this "
            "machine's names and addresses. `*` turns the check off: unsafe, any web page can then use the "
            "server through DNS rebinding."
        ),
    )

    # Auth
    api_keys: list[str] = Field(default_factory=list, description="Comma-separated API keys.")
    require_api_key: bool = Field(True, description="Require `Authorization: Bearer <key>` on `/v1/*` and `/metrics`.")
    default_api_key: str = Field("", description="Pre-fills the key field of `/chat` and `/status`; empty leaves it blank.")

    # Chat models
    models_dir: Path = Field(Path("models"), description="Folder of `.gguf` chat models.")
    model_name: str = Field("", description="Default `.gguf` file; needed only when `MODELS_DIR` holds several.")
    max_loaded_models: int = Field(1, ge=1, le=16, description="Chat models kept loaded at once (least recently used is unloaded).")
    n_threads: int = Field(0, ge=0, description="Generation threads; 0 means all cores.")
    n_ctx: int = Field(2048, ge=128, le=131072, description="Context window in tokens (prompt + completion).")
    n_batch: int = Field(
        32, ge=1, le=4096,
        description="Prompt tokens evaluated per batch (at most 512, llama.cpp's physical batch). A client that leaves, or a "
        "job waiting behind a reply being evaluated again, waits at most one batch.",
    )
    device: str = Field(
        "cpu", description="`cpu`, or a GPU as GPT4All names them: `gpu`, `kompute`, `cuda`, `amd`, `nvidia`, `intel`, "
        "`cuda:<name>` or a device name. A GPU that GPT4All does not find fails the model's load, saying so; never the CPU instead.")
    chat_template_timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description=(
            "A model file's chat template rendering longer is stopped (in its own process): the request gets 400, or, "
            "on the short conversation rendered when the model loads, the model is refused. Its output is limited "
            "to 4 × `MAX_BODY_BYTES` characters."
        ),
    )

    # Generation scheduler
    max_queue: int = Field(32, ge=1, description="Generation jobs allowed to wait; past it, 429.")
    max_queue_per_key: int = Field(
        0, ge=0, description="Generation jobs one API key may have waiting (requests without a key count as one key); "
        "past it, 429. 0 means half of `MAX_QUEUE`."
    )
    queue_timeout_s: float = Field(120.0, gt=0, description="A job waiting longer than this gets 503.")
    generation_timeout_s: float = Field(300.0, gt=0, description="A generation running longer is stopped (`finish_reason: length`).")
    max_n: int = Field(4, ge=1, le=16, description="Largest `n` (choices per request), generated one after another.")
    max_prompts: int = Field(16, ge=1, description="Largest number of prompts in one `/v1/completions` request.")
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, running generations get this long to finish; then they end with an error event."
    )

    # Prefix cache (KV cache kept between requests)
    prefix_cache: bool = Field(
        True, description="Keep each model's KV cache between requests and evaluate only what follows the shared prefix."
    )
    prefix_cache_slots: int = Field(
        4, ge=1, le=64, description="Contexts kept per model (one llama.cpp context, its own KV cache, each): conversations "
        "that keep their cache."
    )
    prefix_cache_mb: int = Field(
        1024, ge=0, description="Bound on all contexts' KV caches together (each sized for `N_CTX`); at least one context always exists."
    )
    prefix_cache_exact: bool = Field(
        True,
        description="Keep only tokens a full evaluation computes bit for bit (evaluated in a batch, not one at a time), so that "
        "output is a full evaluation's. `false` also keeps the earlier reply as generated: fast turns without a pause between "
        "them, but a greedy reply may differ.",
    )
    prefix_cache_share: bool = Field(
        False, description="Let one API key reuse another key's cached prefix. Unsafe with untrusted keys: a cache hit is timeable."
    )

    # Embeddings
    embedding_model: str = Field(
        "all-MiniLM-L6-v2", description="`all-MiniLM-L6-v2` (embedded) or a local sentence-transformers folder."
    )
    embedding_device: str = Field("cpu", description="`cpu`, `cuda` or `mps`.")
    embedding_threads: int = Field(0, ge=0, description="torch threads for embeddings; 0 means all cores.")
    embedding_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="What the embedding model computes in. `auto`: bfloat16 where the CPU computes it natively "
        "(AVX512-BF16 or AMX, as torch reports them), else float32. `bfloat16` also where it is emulated, which is "
        "slower. Vectors are float32 either way, within cosine 0.999 of float32's (checked at load; a model that "
        "strays runs float32). `/metrics` says which runs and why.",
    )
    embed_max_batch: int = Field(64, ge=1, le=4096, description="Most inputs in one `encode` call.")
    embed_max_wait_ms: float = Field(5.0, ge=0, description="Longest wait, after a batch ends, for the next batch to fill.")
    embed_max_queue: int = Field(4096, ge=1, description="Inputs allowed to wait for the embedding model; past it, 429.")
    max_embedding_inputs: int = Field(2048, ge=1, description="Most inputs in one `/v1/embeddings` request.")

    # Training data
    training_data_dir: Path = Field(Path("data/training"), description="Where ingested datasets (JSONL) are written.")
    max_ingest_examples: int = Field(1000, ge=1, description="Most examples in one ingest request.")

    # Stored responses (/v1/responses)
    responses_db: str = Field(
        "", description="SQLite file of stored `/v1/responses` responses; empty means `responses.sqlite3` in the folder "
        "above `TRAINING_DATA_DIR` (`data/`). Replicas on one machine may share one file (`make cluster` gives them this one), "
        "each with its own `REPLICA_NAME`.",
    )
    responses_ttl_s: float = Field(
        30 * 86400, gt=0, description="A stored response is deleted this long after it was created (30 days, as OpenAI).",
    )
    responses_max_mb: int = Field(
        256, ge=1, description="Bound on all stored responses together (their JSON); past it, the oldest are deleted first.",
    )

    @field_validator("api_keys", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            raw = environ.get(name.upper())
            if raw is None:
                continue
            if field.annotation is bool:
                word = raw.strip().lower()
                if word not in TRUE_WORDS | FALSE_WORDS:
                    raise SettingsError(f"{name.upper()}={raw!r} is not a boolean (use true or false)")
                values[name] = word in TRUE_WORDS
            else:
                values[name] = raw
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"invalid configuration: {problems}") from None

    def with_generated_key(self) -> tuple["Settings", str | None]:
        """Return settings that never run open: a random key when keys are required but none set."""
        if self.require_api_key and not self.api_keys:
            key = "sk-local-" + secrets.token_urlsafe(24)
            return self.model_copy(update={"api_keys": [key]}), key
        return self, None

    @property
    def queue_per_key(self) -> int:
        return min(self.max_queue, self.max_queue_per_key or max(1, self.max_queue // 2))

    @property
    def responses_db_path(self) -> Path:
        return Path(self.responses_db) if self.responses_db else self.training_data_dir.parent / "responses.sqlite3"

    @property
    def threads(self) -> int:
        return self.n_threads or (os.cpu_count() or 1)


class SettingsError(ValueError):
    """The environment does not describe a valid configuration."""


def markdown_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        if isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, bool):
            default = str(default).lower()
        shown = f"`{default}`" if default not in ("", []) else "(empty)"
        rows.append(f"| `{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
