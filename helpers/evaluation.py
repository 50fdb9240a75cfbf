"""Measuring a model instead of trusting it: perplexity, agreement with a reference model, memory, speed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], max_len: int = 256) -> float:
    """exp(mean negative log-likelihood per predicted token) over `texts`. Lower is better; 1 is perfect."""
    total_nll, total_tokens = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :max_len].to(model.device)
        if ids.shape[1] < 2:
            continue
        logits = model(ids).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        total_nll += nll.item()
        total_tokens += ids.shape[1] - 1
    return float(torch.exp(torch.tensor(total_nll / total_tokens)))


@dataclass(frozen=True)
class Agreement:
    top1: float  # share of positions where both models pick the same most likely next token
    kl: float  # mean KL(reference || candidate) of next-token distributions, in nats
    positions: int


@torch.no_grad()
def agreement(reference, candidate, tokenizer, texts: list[str], max_len: int = 256) -> Agreement:
    """How closely `candidate` (e.g. a quantized copy) reproduces `reference` on the same inputs, position by position."""
    same, kl_sum, count = 0, 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :max_len]
        p = reference(ids.to(reference.device)).logits[0].float().log_softmax(-1).cpu()
        q = candidate(ids.to(candidate.device)).logits[0].float().log_softmax(-1).cpu()
        same += (p.argmax(-1) == q.argmax(-1)).sum().item()
        kl_sum += (p.exp() * (p - q)).sum(-1).sum().item()
        count += ids.shape[1]
    return Agreement(top1=same / count, kl=kl_sum / count, positions=count)


@dataclass(frozen=True)
class Speed:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float


@torch.no_grad()
def measure_speed(model, prompt_len: int = 64, new_tokens: int = 32, batch: int = 1, repeats: int = 3) -> Speed:
    """Prefill: one forward over `prompt_len` tokens. Decode: `new_tokens` greedy steps with the KV cache, no early
    stop. Best of `repeats` (after a warm-up), as tokens per second."""
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(0)).to(model.device)

    def timed(function) -> float:
        function()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            function()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
        return best

    prefill = timed(lambda: model(ids))
    settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    total = timed(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), **settings))
    decode = max(total - prefill, 1e-9)
    return Speed(prefill_tokens_per_s=batch * prompt_len / prefill, decode_tokens_per_s=batch * new_tokens / decode)
