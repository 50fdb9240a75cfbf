"""Measuring a model instead of trusting it: perplexity, agreement with a reference model, speed, tables.

    perplexity(model, tokenizer, texts)                 # exp(mean negative log-likelihood per predicted token)
    reference = next_token_logprobs(base, tokenizer, texts)
    agreement(reference, candidate, tokenizer, texts)   # top-1 agreement and KL divergence, position by position
    measure_speed(model)                                # prefill and decode tokens/s
    best_time(function)                                 # seconds, best of a few runs (CUDA synchronised)
    format_table(rows)                                  # a Markdown table of dicts

Generic: any causal LM from transformers and its tokenizer. Lessons 03 (quantization) and 05 (fine-tuning) use them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def encode_texts(tokenizer, texts: Sequence, max_len: int = 256) -> list[torch.Tensor]:
    """Each text as a [1, n] tensor of token ids (no special tokens added; at most `max_len`; shorter than 2 skipped:
    there is nothing to predict). With `tokenizer=None`, `texts` are already token ids (tensors or lists), e.g.
    random prompts for a model with random weights. Every function below accepts both."""
    encoded = []
    for text in texts:
        if tokenizer is None:
            ids = torch.as_tensor(text, dtype=torch.long).reshape(1, -1)[:, :max_len]
        else:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :max_len]
        if ids.shape[1] >= 2:
            encoded.append(ids)
    if not encoded:
        raise ValueError("No text with at least 2 tokens to evaluate on.")
    return encoded


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence, max_len: int = 256) -> float:
    """exp(mean negative log-likelihood per predicted token) over `texts`. Lower is better; 1 is perfect; a model
    that guesses uniformly over V tokens scores V."""
    total_nll, total_tokens = 0.0, 0
    device = _model_device(model)
    for ids in encode_texts(tokenizer, texts, max_len):
        logits = model(ids.to(device)).logits[0, :-1].float()
        total_nll += F.cross_entropy(logits, ids[0, 1:].to(device), reduction="sum").item()
        total_tokens += ids.shape[1] - 1
    return math.exp(total_nll / total_tokens)


@torch.no_grad()
def next_token_logprobs(model, tokenizer, texts: Sequence, max_len: int = 256) -> list[torch.Tensor]:
    """For each text, the model's log-probabilities of the next token at every position ([n, vocab], fp32, on CPU).
    Compute them once for a reference model and compare several candidates against them."""
    device = _model_device(model)
    encoded = encode_texts(tokenizer, texts, max_len)
    return [model(ids.to(device)).logits[0].float().log_softmax(-1).cpu() for ids in encoded]


def kl_divergence(reference_logprobs: torch.Tensor, candidate_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(reference || candidate) per position, in nats: sum_v p_ref(v) * (log p_ref(v) - log p_cand(v)).
    0 when the two distributions are identical; how many extra nats a token costs if you code it with the
    candidate's probabilities while the reference's are the truth."""
    return (reference_logprobs.exp() * (reference_logprobs - candidate_logprobs)).sum(-1)


@dataclass(frozen=True)
class Agreement:
    top1: float  # share of positions where both models rank the same next token first
    kl: float  # mean KL(reference || candidate) over positions, in nats
    kl_max: float  # the worst position
    positions: int


@torch.no_grad()
def agreement(reference, candidate, tokenizer, texts: Sequence, max_len: int = 256) -> Agreement:
    """How closely `candidate` (e.g. a quantized copy) reproduces `reference` on the same inputs, position by position.
    `reference` is a model or the output of `next_token_logprobs` for the same texts."""
    if not isinstance(reference, list):
        reference = next_token_logprobs(reference, tokenizer, texts, max_len)
    candidate_logprobs = next_token_logprobs(candidate, tokenizer, texts, max_len)
    if [r.shape for r in reference] != [c.shape for c in candidate_logprobs]:
        raise ValueError("The reference log-probabilities were computed on other texts (shapes differ).")
    same, kls = 0, []
    for p, q in zip(reference, candidate_logprobs):
        same += (p.argmax(-1) == q.argmax(-1)).sum().item()
        kls.append(kl_divergence(p, q))
    kl = torch.cat(kls).clamp_min(0)  # rounding can make an identical pair read -1e-9
    return Agreement(top1=same / kl.numel(), kl=kl.mean().item(), kl_max=kl.max().item(), positions=kl.numel())


# ------------------------------------------------------------------------------------------------------ timing


def best_time(function: Callable[[], object], repeats: int = 3, warmup: int = 1, device=None) -> float:
    """Seconds taken by `function()`, the best of `repeats` runs after `warmup` untimed ones. The minimum is the
    figure least disturbed by other programs. On CUDA the GPU is synchronised around each run: kernels are
    asynchronous, and without it you would time only the launch."""
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(warmup):
        function()
    best = float("inf")
    for _ in range(max(1, repeats)):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


@dataclass(frozen=True)
class Speed:
    prefill_tokens_per_s: float  # prompt tokens processed per second (one forward over the whole prompt)
    decode_tokens_per_s: float  # new tokens per second once the prompt is in the KV cache
    prefill_s: float
    decode_s_per_token: float


@torch.no_grad()
def measure_speed(model, prompt_len: int = 64, new_tokens: int = 16, batch: int = 1, repeats: int = 3) -> Speed:
    """Prefill: one forward over `prompt_len` tokens. Decode: greedy generation with the KV cache, no early stop;
    per-token time = (time for `new_tokens` - time for 1) / (new_tokens - 1), which cancels generate()'s fixed
    set-up cost. Random token ids (seeded): speed does not depend on what the tokens say."""
    if new_tokens < 2:
        raise ValueError("new_tokens must be at least 2 (decode time is a difference of two runs).")
    device = _model_device(model)
    vocab = model.config.get_text_config().vocab_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, prompt_len), generator=generator).to(device)
    mask = torch.ones_like(ids)

    def generate(n: int):
        return model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=0)

    prefill = best_time(lambda: model(ids), repeats, device=device)
    one = best_time(lambda: generate(1), repeats, device=device)
    many = best_time(lambda: generate(new_tokens), repeats, device=device)
    per_token = max(many - one, 1e-9) / (new_tokens - 1)
    return Speed(batch * prompt_len / prefill, batch / per_token, prefill, per_token)


# ------------------------------------------------------------------------------------------------------ tables


def _cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return "-" if value is None else str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table (one row per dict). In Jupyter: `display(Markdown(format_table(rows)))`; elsewhere print it."""
    if not rows:
        return ""
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
