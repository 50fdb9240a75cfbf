"""Build a Llama-architecture model trained on the course's own Q&A: a model of real size whose figures mean something.

Random weights give near-flat next-token distributions, where quantization "disagrees" with full precision on noise
(lesson 03's quality checks rightly fail on them). A model that has learned something has confident distributions.
No real checkpoint can be downloaded on the course's build machines, so this script trains one where it runs:

    python scripts/build_course_llama.py --size 1b --out workspace/course-llama-1b     # ~1B parameters, on a GPU
    python scripts/build_course_llama.py --size cpu --out workspace/course-llama-cpu   # ~4M, a few CPU minutes
    GROK2_COURSE_PROFILE=small GROK2_COURSE_MODEL=workspace/course-llama-1b  ...        # lessons then use it

The shape is TinyLlama-1.1B's (hidden 2048, 22 layers, grouped-query attention with 4 KV heads, SwiGLU 5632) except
the vocabulary: the tiny Grok 2's tokenizer (1,024 tokens, Grok 2's control tokens and chat template), so every
token is learned. It trains on data/course_qa.jsonl (never on data/heldout_course_text.txt, which lessons use as
unseen text), loss on every token, with the tiny Grok 2's training loop (AdamW in fp32; bf16 autocast on a GPU that has bf16). The folder is written
atomically (a temporary folder renamed at the end) and an existing one is only replaced with --overwrite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


from build_tiny_grok2 import CORPUS, load_corpus, train

from helpers.hardware import compute_dtype, device_kind
from helpers.paths import TINY_MODEL_DIR

SIZES = {
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4),
    "cpu": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                num_key_value_heads=4),
    "test": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}
# Steps and peak learning rate per size: bigger models need a smaller rate to stay stable.
TRAINING = {"1b": (400, 3e-4), "cpu": (250, 2e-3), "test": (30, 3e-3)}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def build_config(size: str):
    from transformers import LlamaConfig

    vocab = json.loads((TINY_MODEL_DIR / "config.json").read_text())["vocab_size"]  # the tokenizer's size
    return LlamaConfig(vocab_size=vocab, max_position_embeddings=2048, tie_word_embeddings=False,
                       bos_token_id=None, eos_token_id=2, pad_token_id=0, **SIZES[size])


def training_examples(tokenizer) -> list[tuple[list[int], list[int]]]:
    """Each conversation in the chat template, as (ids, labels): the loss covers every token."""
    examples = []
    for messages in load_corpus(CORPUS):
        ids = tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)
        examples.append((ids, list(ids)))
    return examples


@torch.no_grad()
def exact_answers(model, tokenizer, conversations, device, limit: int = 32) -> float:
    """Share of (the first `limit`) course questions answered word for word, greedy."""
    conversations = conversations[:limit]
    prompts = [tokenizer.apply_chat_template(c[:-1], tokenize=False, add_generation_prompt=True) for c in conversations]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    out = model.generate(**batch, max_new_tokens=64, do_sample=False, eos_token_id=[1, 2], pad_token_id=0)
    answers = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return sum(a.strip() == c[-1]["content"].strip() for a, c in zip(answers, conversations)) / len(conversations)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=None, help="default: 400 (1b), 250 (cpu), 30 (test)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"{args.out} exists: pass --overwrite to replace it, or choose another --out.")
    from transformers import AutoTokenizer, LlamaForCausalLM

    device = torch.device("cuda" if device_kind() == "cuda" else "cpu")
    steps, peak_lr = TRAINING[args.size]
    steps = args.steps or steps
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    config = build_config(args.size)
    with torch.device(device):
        model = LlamaForCausalLM(config)  # fp32 master weights; bf16 autocast on a GPU that has bf16
    params = sum(p.numel() for p in model.parameters())
    examples = training_examples(tokenizer)
    print(f"course Llama ({args.size}): {params / 1e6:,.1f}M parameters, {len(examples)} conversations, "
          f"{steps} steps on {device}", flush=True)
    started = time.perf_counter()
    # The tiny Grok 2's recipe (scripts/build_tiny_grok2.py): AdamW, warm-up then cosine decay, length-pooled batches;
    # bf16 autocast over fp32 weights on a GPU that has bf16.
    losses = train(model, examples, steps, args.seed, batch_size=args.batch_size, peak_lr=peak_lr, device=device)
    train_s = time.perf_counter() - started
    exact = exact_answers(model, tokenizer, load_corpus(CORPUS), device)
    print(f"trained in {train_s:.0f} s; final loss {sum(losses[-20:]) / len(losses[-20:]):.3f}; exact answers "
          f"{exact:.0%} of 32 course questions", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        model.to(compute_dtype(device)).save_pretrained(staging)  # bf16 (fp16 on a T4 / V100) on a GPU, fp32 on a CPU
        model.generation_config.eos_token_id, model.generation_config.pad_token_id = [1, 2], 0
        model.generation_config.save_pretrained(staging)
        for name in TOKENIZER_FILES:
            shutil.copy2(TINY_MODEL_DIR / name, staging / name)
        (staging / "README.md").write_text(
            f"# course Llama ({args.size})\n\nBuilt by `scripts/build_course_llama.py --size {args.size}`: "
            f"{params:,} parameters in Llama's architecture (TinyLlama-1.1B's shape for `1b`), the tiny Grok 2's "
            f"tokenizer, trained {steps} steps ({train_s:.0f} s on {device}) on data/course_qa.jsonl. Final training "
            f"loss {sum(losses[-20:]) / len(losses[-20:]):.3f}; exact answers to {exact:.0%} of 32 course questions. "
            "It knows the course's Q&A and nothing else: a stand-in with confident predictions, for measuring.\n")
        if args.out.exists():
            shutil.rmtree(args.out)
        os.replace(staging, args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
