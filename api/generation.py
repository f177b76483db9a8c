"""From a validated request to scheduler jobs and back: shared by the HTTP routes and the chat UI.

It resolves the model, renders chat prompts with the model's own template, submits one job per
choice (all at once, so the queue bound holds for the whole request) and turns the jobs' text
into choice events. It knows no HTTP: routes wrap its output into JSON or SSE.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import AsyncIterator

from api.protocol_chat import NUL_MESSAGE
from errors import ContextLengthExceeded, InvalidRequest, ServerError
from models.chat_plan import ChatPlan, plan_chat
from models.chat_template import ChatTemplateError, ChatTemplateLimit
from models.conversation import Conversation
from models.interfaces import GenerationOutcome, SamplingParams, TokenLogprobs
from models.registry import ModelFile, ModelRegistry, ModelRegistryError
from scheduler.generation import GenerationScheduler
from scheduler.jobs import GenerationJob




@dataclass
class ChoiceResult:
    """One choice, whole: its text, how it ended, and its tokens' logprobs (when asked for)."""

    text: str
    outcome: GenerationOutcome
    logprobs: list[TokenLogprobs]


@dataclass
class ChoiceEvent:
    """A piece of one choice's text, or (with `finish`) the end of that choice."""

    index: int
    text: str = ""
    first: bool = False
    finish: GenerationOutcome | None = None
    logprobs: tuple[TokenLogprobs, ...] = ()  # of the tokens that wrote `text`, when the request asked for them


class GenerationService:
    def __init__(self, scheduler: GenerationScheduler, registry: ModelRegistry, *, embedding_model: str = "", max_n: int = 4, max_prompts: int = 16):
        self.scheduler = scheduler
        self.registry = registry
        self.embedding_model = embedding_model
        self.max_n = max_n
        self.max_prompts = max_prompts

    def resolve_model(self, name: str | None) -> ModelFile:
        if name and self.embedding_model and name == self.embedding_model:
            raise InvalidRequest(
                f"`{name}` is an embedding model; use it with /v1/embeddings", param="model"
            )
        if name:
            return self.registry.get(name)
        try:
            return self.registry.default()
        except ModelRegistryError as exc:  # several models and no MODEL_NAME, or none at all
            raise InvalidRequest(f"no default model: {exc}; or name one in `model`", param="model") from None

    async def chat_prompt(self, model: ModelFile, conversation: Conversation) -> tuple[str, ChatPlan]:
        """The prompt for `conversation` in the model's own template, and its plan (tools' constraint, parsers)."""
        for index, message in enumerate(conversation.messages):
            if "\x00" in (message.content or ""):
                raise InvalidRequest(NUL_MESSAGE, param=f"messages[{index}].content")
        # Read and trial-rendered once per file version (ModelLoadFailed if the template misbehaved then).
        chat_format = await asyncio.to_thread(self.registry.chat_format, model)
        plan = plan_chat(conversation, chat_format)
        try:
            return await self.registry.sandbox.render_async(chat_format, plan.messages, plan.tools), plan
        except ChatTemplateLimit as exc:
            raise InvalidRequest(
                f"the model's chat template was stopped on these messages: it {exc}", param="messages", code="chat_template_limit"
            ) from None
        except ChatTemplateError as exc:
            raise InvalidRequest(f"the model's chat template refused the messages: {exc}", param="messages") from None

    def submit(
        self, model: ModelFile, prompts: list[str], params: SamplingParams, n: int, *, origin: str = "api", scope: str = ""
    ) -> list[GenerationJob]:
        """One job per choice; `scope` (the caller's key, hashed) bounds whose cached prefixes they reuse."""
        if n > self.max_n:
            raise InvalidRequest(f"n must be at most {self.max_n} (MAX_N)", param="n")
        if len(prompts) > self.max_prompts:
            raise InvalidRequest(f"at most {self.max_prompts} prompts per request (MAX_PROMPTS)", param="prompt")
        if any("\x00" in prompt for prompt in prompts):
            raise InvalidRequest(NUL_MESSAGE, param="prompt")
        self.scheduler.check_room(len(prompts) * n, scope)  # all of the request's jobs, or none of them
        jobs: list[GenerationJob] = []
        try:
            for prompt in prompts:
                for choice in range(n):
                    # choice i of n draws from seed + i: the same seed gives the same n choices, not n copies of one
                    seeded = params if params.seed is None else replace(params, seed=params.seed + choice)
                    jobs.append(self.scheduler.submit(model.id, prompt, seeded, origin=origin, scope=scope))
        except ServerError:
            for job in jobs:
                job.cancel("rejected")
            raise
        return jobs

    async def events(self, jobs: list[GenerationJob], prompt_param: str = "prompt") -> AsyncIterator[ChoiceEvent]:
        """Every choice in turn, as it is generated; cancels every unfinished job if left early.

        `prompt_param` is the request's field that held the prompt, named by a too-long-prompt error."""
        try:
            for index, job in enumerate(jobs):
                first = True
                try:
                    async for delta in job.stream(self.scheduler.queue_timeout_s):
                        yield ChoiceEvent(index, delta.text, first=first, logprobs=delta.logprobs)
                        first = False
                except ContextLengthExceeded as exc:
                    exc.param = exc.param or prompt_param
                    raise
                yield ChoiceEvent(index, first=first, finish=job.outcome)
        finally:
            for job in jobs:
                if job.finished_at is None:
                    job.cancel("client")

    async def complete(self, jobs: list[GenerationJob], prompt_param: str = "prompt") -> list[ChoiceResult]:
        texts: list[list[str]] = [[] for _ in jobs]
        logprobs: list[list[TokenLogprobs]] = [[] for _ in jobs]
        results: list[ChoiceResult] = []
        async for event in self.events(jobs, prompt_param):
            if event.finish is None:
                texts[event.index].append(event.text)
                logprobs[event.index].extend(event.logprobs)
            else:
                results.append(ChoiceResult("".join(texts[event.index]), event.finish, logprobs[event.index]))
        return results
