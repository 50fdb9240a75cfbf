"""Measuring a model instead of trusting it: perplexity, agreement with a reference model, answer quality, speed.

    perplexity(model, tokenizer, texts)                 # exp(mean negative log-likelihood per predicted token)
    reference = next_token_logprobs(base, tokenizer, texts)
    agreement(reference, candidate, tokenizer, texts)   # top-1 agreement and KL divergence, position by position
    max_abs_difference(logits, reference_logits)        # the largest gap between two tensors (two runs' logits)
    answer_loss(model, examples)                        # cross-entropy of the labelled (answer) tokens only
    evaluate_answers(model, tokenizer, conversations)   # greedy answers scored by token F1 and exact match
    measure_speed(model)                                # prefill and decode tokens/s
    best_time(function)                                 # seconds, best of a few runs (CUDA synchronised)

Generic: any causal LM from transformers and its tokenizer. Lessons 03 (quantization) and 05 (fine-tuning) use them;
`helpers.finetune` trains on the same labelled examples (batched by `helpers.batches.collate`, the loss summed by
`summed_label_loss`) that `answer_loss` scores. Tables of results: `helpers.tables.markdown_table` (also importable
here as `format_table`, the name lessons 02, 03 and 06 use).
"""

from __future__ import annotations

import math
import time
import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .batches import IGNORE_INDEX, collate
from .tables import markdown_table as format_table  # noqa: F401  (lessons 02, 03 and 06 import it from here)


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


def max_abs_difference(values: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest absolute difference between two tensors of one shape (e.g. two runs' logits), in float32.
    Different shapes are refused rather than broadcast, which would compare the wrong entries."""
    if values.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(values.shape)} vs {tuple(reference.shape)}")
    return (values.float() - reference.float()).abs().max().item()


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


# ------------------------------------------------------------------------------------------ labelled answers


def summed_label_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over the labelled tokens, how many): the caller chooses the normalisation."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def answer_loss(model, examples: Sequence, pad_id: int = 0, batch_size: int = 16, accelerator=None) -> float:
    """Mean cross-entropy per labelled (answer) token, in nats: exp() of it is the answers' perplexity. With an
    accelerator every process scores its share and the totals are summed (every process runs the same number of
    batches, as FSDP needs)."""
    was_training = model.training
    model.eval()
    device = _model_device(model) if accelerator is None else accelerator.device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine = list(examples[rank::world])
    rounds = math.ceil(math.ceil(len(examples) / world) / batch_size)
    total, count = 0.0, 0
    for r in range(rounds):
        chunk = mine[r * batch_size:(r + 1) * batch_size]
        weight = 1.0 if chunk else 0.0  # a process with nothing left still runs the batch (FSDP), then ignores it
        batch = collate(chunk or [examples[0]], pad_id)
        loss, n = summed_label_loss(model, {k: v.to(device) for k, v in batch.items()})
        total += weight * loss.item()
        count += int(weight) * n
    if accelerator is not None:
        sums = accelerator.reduce(torch.tensor([total, float(count)], device=device), reduction="sum")
        total, count = sums[0].item(), int(sums[1].item())
    if was_training:
        model.train()
    return total / max(count, 1)


def normalize_answer(text: str) -> list[str]:
    """Words of an answer for scoring: Unicode-normalised, lower case, punctuation and apostrophes as spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) and ch not in "+-" else ch for ch in text)
    return text.split()


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of word precision and recall (SQuAD's answer F1): partial credit for partly right answers."""
    predicted, expected = normalize_answer(prediction), normalize_answer(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = 0
    remaining = list(expected)
    for word in predicted:
        if word in remaining:
            remaining.remove(word)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


@dataclass
class AnswerReport:
    """Greedy answers to held-out questions, scored against the references."""

    questions: list[str]
    answers: list[str]
    references: list[str]
    f1: float
    exact: float
    answer_loss: float | None = None

    def table(self, rows: int = 5) -> str:
        lines = []
        for q, a, r in list(zip(self.questions, self.answers, self.references))[:rows]:
            lines.append(f"Q: {q}\n   model:     {a!r}\n   reference: {r!r}  (F1 {token_f1(a, r):.2f})")
        return "\n".join(lines)


def evaluate_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 48,
                     batch_size: int = 32, examples: Sequence | None = None) -> AnswerReport:
    """Answer the last user turn of each conversation greedily; score against its reference answer (token F1 and
    exact match); with `examples` (the same conversations, tokenized and labelled) also the answer loss."""
    from .chat import SamplingSettings, generate_batch

    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    prompts = [c[:-1] for c in conversations]
    answers = []
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        answers += [done.text.strip() for done in generate_batch(model, tokenizer, batch, settings)]
    if was_training:
        model.train()
    references = [c[-1]["content"] for c in conversations]
    f1 = sum(token_f1(a, r) for a, r in zip(answers, references)) / len(references)
    exact = sum(exact_match(a, r) for a, r in zip(answers, references)) / len(references)
    loss = answer_loss(model, examples, tokenizer.pad_token_id or 0) if examples is not None else None
    return AnswerReport([c[-2]["content"] for c in conversations], answers, references, f1, exact, loss)


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
