"""Turn an example into token ids with the study's prompt format and a response-only loss mask.

Two encodings of the same prompt format:
- `pair` (default): prompt and response tokenized separately and joined; the prompt is
  `instruction + "\n"` with special tokens (base) or the chat template with the system
  prompt, dropped only when the template rejects it (instruct). The loss mask is exactly
  the prompt's tokens, and the response's tokens never depend on the prompt.
- `study`: the study's own rules (MingLiiii/Layer_Gradient, `get_gradient_values.py`),
  restated: the whole text `prompt + response` is encoded at once with special tokens and
  truncated at max_length; the mask covers `len(encode(text[:text.rfind(response)]))`
  tokens. On the chat path the prompt is the template rendered as text, so a template
  that writes BOS gets a second one from the encoding; every Gemma model gets no system
  prompt (the study tests `'gemma' in model_name_or_path`; here the model type).
  Tokens can merge across the prompt/response boundary, so the two differ slightly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lg_pipeline.example import Example

SYSTEM_PROMPT = "You are a helpful assistant."
IGNORE_INDEX = -100
ENCODINGS: tuple[str, ...] = ("pair", "study")


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
    return _as_id_list(_chat_template(tokenizer, instruction, system=True, tokenize=True))


def _chat_template(tokenizer: Any, instruction: str, system: bool, tokenize: bool) -> Any:
    """The generation prompt for one user turn, with the system prompt unless `system` is False or rejected."""
    user = {"role": "user", "content": instruction}
    if system:
        try:
            return tokenizer.apply_chat_template(
                [{"role": "system", "content": SYSTEM_PROMPT}, user], add_generation_prompt=True, tokenize=tokenize
            )
        except Exception as exc:  # jinja raises TemplateError for "system role not supported"
            if "system" not in str(exc).lower():
                raise
    return tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=tokenize)


def study_drops_system(model_type: str) -> bool:
    """The study's Gemma rule: no system prompt for any Gemma model (base or instruct)."""
    return "gemma" in model_type.lower()


def study_text(tokenizer: Any, instruction: str, response: str, chat: bool, drop_system: bool) -> str:
    """The whole text the study encodes: `instruction\\n response` (base) or template text + response."""
    if not chat:
        return instruction + "\n" + response
    return _chat_template(tokenizer, instruction, system=not drop_system, tokenize=False) + response


def encode(
    tokenizer: Any,
    example: Example,
    chat: bool,
    max_length: int,
    encoding: str = "pair",
    drop_system: bool = False,
) -> Encoded | None:
    """Encode one example; None when truncation leaves no response token (caller reports it).

    `drop_system` (the study's Gemma rule) applies to the `study` encoding only.
    """
    if encoding == "study":
        return _encode_study(tokenizer, example, chat, max_length, drop_system)
    if encoding != "pair":
        raise ValueError(f"encoding '{encoding}' is not one of {', '.join(ENCODINGS)}")
    prompt = prompt_ids(tokenizer, example.instruction, chat)
    response = list(tokenizer(example.response, add_special_tokens=False)["input_ids"])
    ids = (prompt + response)[:max_length]
    if len(ids) <= len(prompt):
        return None
    return Encoded(example.example_id, ids, len(prompt))


def _encode_study(tokenizer: Any, example: Example, chat: bool, max_length: int, drop_system: bool) -> Encoded | None:
    text = study_text(tokenizer, example.instruction, example.response, chat, drop_system)
    ids = list(tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"])
    n_prompt = len(tokenizer(text[: text.rfind(example.response)], add_special_tokens=True)["input_ids"])
    if len(ids) <= max(n_prompt, 1):  # no label left, or only the first token (which nothing predicts)
        return None
    return Encoded(example.example_id, ids, n_prompt)
