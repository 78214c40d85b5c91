"""Turn an example into token ids with the study's prompt format and a response-only loss mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lg_pipeline.example import Example

SYSTEM_PROMPT = "You are a helpful assistant."
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response; the first `n_prompt` tokens carry no loss."""

    example_id: str
    input_ids: list[int]
    n_prompt: int

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_response_tokens(self) -> int:
        return len(self.input_ids) - self.n_prompt

    def labels(self) -> list[int]:
        return [IGNORE_INDEX] * self.n_prompt + self.input_ids[self.n_prompt :]


def _as_id_list(ids: Any) -> list[int]:
    """apply_chat_template returns a list, a tensor or a BatchEncoding depending on version."""
    if hasattr(ids, "keys") and "input_ids" in ids:
        ids = ids["input_ids"]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]


def prompt_ids(tokenizer: Any, instruction: str, chat: bool) -> list[int]:
    """Base models: `instruction + "\\n"` with special tokens. Instruct: the chat template.

    The system message is dropped only when the template rejects it (e.g. Gemma-2).
    """
    if not chat:
        return list(tokenizer(instruction + "\n", add_special_tokens=True)["input_ids"])
    user = {"role": "user", "content": instruction}
    try:
        ids = tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM_PROMPT}, user], add_generation_prompt=True, tokenize=True
        )
    except Exception as exc:  # jinja raises TemplateError for "system role not supported"
        if "system" not in str(exc).lower():
            raise
        ids = tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=True)
    return _as_id_list(ids)


def encode(tokenizer: Any, example: Example, chat: bool, max_length: int) -> Encoded | None:
    """Encode one example; None when truncation leaves no response token (caller reports it)."""
    prompt = prompt_ids(tokenizer, example.instruction, chat)
    response = list(tokenizer(example.response, add_special_tokens=False)["input_ids"])
    ids = (prompt + response)[:max_length]
    if len(ids) <= len(prompt):
        return None
    return Encoded(example.example_id, ids, len(prompt))
