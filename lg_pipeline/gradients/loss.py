"""The engine's SFT loss, mean next-token cross-entropy over each example's response tokens, in bounded memory.

The vocabulary projection of every response position of a batch, in fp32 with its
gradient, is the largest tensor of a step on a 128k-262k vocabulary (Llama 3, Qwen2,
Gemma 2/3): 4 × 400 × 262,144 floats, several copies. Here the response positions'
logits are formed `LOGIT_BUDGET` elements at a time and each chunk's gradient with
respect to its hidden states is taken in the same pass, so the vocabulary part peaks
at one chunk, whatever the batch size.

Why our own: Liger Kernel's fused linear cross-entropy is Triton (CUDA only), and
`cut-cross-entropy`'s torch path (`impl="torch_compile"`, 25.1.1) forms `e @ c.T` for
every valid row at once (its CCE kernel is Triton too); neither bounds memory on a CPU.
"""

from __future__ import annotations

from typing import Any

import torch  # this module is imported when a batch runs, never by `lg_pipeline.gradients.engine` at import

from lg_pipeline.gradients.encoding import IGNORE_INDEX

# fp32 logit elements per chunk (256 MiB): 256 positions of a 262k vocabulary, 1365 of a 49k one. Each
# chunk streams the whole head matrix through both of its GEMMs: with 64 positions per chunk (2**24) the
# head of Gemma-3-270M on an 808-position response took 1.6× the materialised loss on a CPU, with 256
# 1.1-1.2× (`bench/bench_loss.py`, two runs).
LOGIT_BUDGET = 2**26
# Model types whose causal-LM head is `lm_head(decoder output)` with, at most, Gemma's final
# tanh soft-capping (checked in transformers 5.x); any other model gets the materialised loss.
CHUNKED_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2", "phi3", "smollm3", "opt"}
)


def chunked_head(model: Any) -> bool:
    """Whether `response_losses` computes this model's loss in chunks (else from the model's own logits)."""
    return getattr(model.config, "model_type", None) in CHUNKED_MODEL_TYPES and hasattr(model, "get_decoder")


def response_losses(model: Any, ids: Any, mask: Any, labels: Any, keep: dict[str, int]) -> Any:
    """Per-example mean CE over response tokens (labels: -100 on prompt and padding), differentiable."""
    if not chunked_head(model):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **keep).logits
        return per_example_loss(logits, labels)
    import torch.nn.functional as F

    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # position p predicts token p+1
    scored = targets != IGNORE_INDEX
    owner = scored.nonzero()[:, 0]  # example of each scored position, in row-major order like hidden[scored]
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    ce = ChunkedLinearCrossEntropy.apply(hidden[scored], head.weight, head.bias, targets[scored], softcap)
    sums = torch.zeros(len(ids), dtype=ce.dtype, device=ce.device).index_add(0, owner, ce)
    return sums / scored.sum(1)


def per_example_loss(logits: Any, labels: Any) -> Any:
    """Mean next-token cross-entropy over each example's response tokens, from materialised logits."""
    labels = kept_labels(logits, labels)
    return response_ce_sums(logits, labels) / (labels[:, 1:] != IGNORE_INDEX).sum(1)


def response_ce_sums(logits: Any, labels: Any) -> Any:
    """Σ of next-token cross-entropy over each example's response tokens (−log p of the response).

    Computed on (tokens, vocab) rows like the model's own loss: on CPU the (batch, vocab, T)
    layout reduces over the vocabulary less accurately (~1e-4 relative with a 49k vocabulary).
    Labels are shifted rather than logits, so the (batch·T, vocab) rows are a view, not a copy.
    """
    import torch.nn.functional as F

    labels = kept_labels(logits, labels)
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # the last position predicts nothing
    flat = logits.float().reshape(-1, logits.shape[-1])
    ce = F.cross_entropy(flat, shifted.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    return ce.view(shifted.shape).sum(1)


def kept_labels(logits: Any, labels: Any) -> Any:
    """The labels of the positions the logits cover: the last ones when `logits_to_keep` cut the rest."""
    return labels[:, labels.shape[1] - logits.shape[1] :]


def _chunk_rows(vocab: int) -> int:
    return max(1, LOGIT_BUDGET // max(vocab, 1))


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """CE of `softcap(hidden @ weightᵀ + bias)` per row, and d(CE)/d(hidden) taken chunk by chunk in the forward.

    Each row's CE depends on its own hidden row only, so the backward is that stored
    gradient times the incoming per-row gradient: exact for any upstream use of the
    losses. The head's weight gets no gradient (the engine needs none; refused if asked).
    """

    @staticmethod
    def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, softcap: float | None) -> Any:
        losses = torch.empty(len(hidden), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        step = _chunk_rows(weight.shape[0])
        for start in range(0, len(hidden), step):
            rows = slice(start, start + step)
            losses[rows], grad_hidden[rows] = _chunk(hidden[rows], weight, bias, targets[rows], softcap)
        ctx.save_for_backward(grad_hidden)
        ctx.hidden_dtype = hidden.dtype
        return losses

    @staticmethod
    def backward(ctx: Any, grad_losses: Any) -> tuple:
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise RuntimeError("ChunkedLinearCrossEntropy gives no gradient to the output projection")
        (grad_hidden,) = ctx.saved_tensors
        return (grad_hidden * grad_losses[:, None]).to(ctx.hidden_dtype), None, None, None, None


def _chunk(hidden: Any, weight: Any, bias: Any, targets: Any, softcap: float | None) -> tuple[Any, Any]:
    """(CE per row, d CE / d hidden) of one chunk, by autograd on the chunk alone: the same operations,
    in the same order, as the model's own head and loss (logits in the head's dtype, CE in fp32)."""
    import torch.nn.functional as F

    with torch.enable_grad():
        rows = hidden.detach().requires_grad_(True)
        logits = F.linear(rows, weight.detach(), None if bias is None else bias.detach())
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        losses = F.cross_entropy(logits.float(), targets, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), rows)
    return losses.detach(), grad.float()
