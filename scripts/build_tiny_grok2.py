"""Build the course's built-in model, tiny Grok 2, into data/tiny-grok-2/ - deterministically, in about a minute.

    python scripts/build_tiny_grok2.py [--out DIR] [--steps N] [--seed S]

1. Tokenizer: a byte-level BPE trained on the course corpus with Grok 2's pre-tokenizer pattern (every digit alone),
   Grok 2's control tokens first (<|pad|> 0, <|separator|> 1, <|eos|> 2), no BOS, and Grok 2's chat template.
2. Config: exactly the keys of the released config.json (model_type "git" included), every size scaled down.
3. Training: Grok2ForCausalLM learns data/course_qa.jsonl in the chat format; the loss covers only the assistant's
   answers and their closing <|separator|>, so the model learns to answer and to stop.
4. Everything is written to a temporary folder first and swapped in at the end: an interrupted build never leaves a
   half-written model behind.

Same machine, same command, same bytes: seeds are fixed, the thread count is fixed and PyTorch's deterministic
algorithms are on. (Other CPUs may round differently; the shipped files are the reference.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from helpers.grok2 import RELEASED_ARCHITECTURE, Grok2Config, Grok2ForCausalLM
from helpers.grok2.configuration_grok2 import RELEASED_CONFIG_KEYS
from helpers.grok2.tokenization_grok2 import EOS, GROK2_CHAT_TEMPLATE, GROK2_SPLIT_PATTERN, PAD, SEPARATOR
from helpers.hardware import compute_dtype

CORPUS = REPO / "data" / "course_qa.jsonl"
DEFAULT_OUT = REPO / "data" / "tiny-grok-2"
VOCAB_SIZE = 1024
# One thread, on purpose. The matrices are 64 wide, too small to gain much from splitting; and on a busy machine
# OpenMP threads spin-wait for each other: with two threads while other jobs ran, a step took 17 s instead of 0.2 s.
# The thread count is also part of the result: sums split over a different number of threads round differently.
THREADS = 1

# The released values, scaled down. Keys and their order: exactly those of xai-org/grok-2/config.json.
TINY_SIZES = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,  # dense MLP: twice an expert's width, as in Grok 2 (32768 vs 16384)
    moe_intermediate_size=64,
    max_position_embeddings=2048,
    num_experts_per_tok=2,
    num_local_experts=8,
    residual_moe=True,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_hidden_layers=4,
    head_dim=16,
    embedding_multiplier_scale=8.0,  # sqrt(hidden_size), as sqrt(8192) = 90.5 in Grok 2
    attn_temperature_len=256,
    original_max_position_embeddings=128,  # x scaling_factor 16 = max_position_embeddings
)


def load_corpus(path: Path) -> list[list[dict]]:
    conversations = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        messages = row.get("messages")
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError(f"{path}:{number}: a conversation must end with an assistant message")
        conversations.append(messages)
    return conversations


def train_tokenizer(conversations: list[list[dict]]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [message["content"] for conversation in conversations for message in conversation]
    texts += ["Human: ", "Assistant: ", "System: "] * 50  # the template's own words get tokens too
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GROK2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[PAD, SEPARATOR, EOS],  # ids 0, 1, 2 - Grok 2's
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, bos_token=None, clean_up_tokenization_spaces=False
    )
    tokenizer.chat_template = GROK2_CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    assert [tokenizer.convert_tokens_to_ids(t) for t in (PAD, SEPARATOR, EOS)] == [0, 1, 2]
    return tokenizer


def tiny_config() -> Grok2Config:
    released = json.loads((REPO / "data" / "grok-2-config.json").read_text())
    values = {k: v for k, v in released.items() if k not in ("model_type", "torch_dtype")}
    values.update(TINY_SIZES)
    return Grok2Config(**values)


def config_file_contents(config: Grok2Config) -> dict:
    """config.json with exactly the released keys in the released order (model_type "git" as xAI shipped it)."""
    full = json.loads(config.to_json_string())
    contents = {key: full.get(key) for key in RELEASED_CONFIG_KEYS}
    contents.update(architectures=[RELEASED_ARCHITECTURE], model_type="git", torch_dtype="float32")
    return contents


def encode_with_answer_mask(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation, and labels that keep only the assistant answers (+ their separator)."""
    ids, labels = [], []
    for index, message in enumerate(messages):
        rendered = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        previous = tokenizer.apply_chat_template(messages[:index], tokenize=False) if index else ""
        segment = rendered[len(previous):]
        if message["role"] == "assistant":
            head, answer_and_end = "Assistant:", segment[len("Assistant:"):]
            answer, tail = answer_and_end[: -len("\n\n")], "\n\n"  # " answer<|separator|>" is learned
            for text, learn in ((head, False), (answer, True), (tail, False)):
                part = tokenizer.encode(text, add_special_tokens=False)
                ids += part
                labels += part if learn else [-100] * len(part)
        else:
            part = tokenizer.encode(segment, add_special_tokens=False)
            ids += part
            labels += [-100] * len(part)
    whole = tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)
    assert whole == ids, "segment-wise tokenization must equal whole-text tokenization"
    return ids, labels


def make_batches(examples, batch_size: int, generator: torch.Generator, batches_per_pool: int = 4):
    """One epoch of padded batches, in an order drawn from `generator`.

    Conversations range from 20 to 100+ tokens, and a batch is as wide as its longest row. So each pool of a few
    batches' worth of shuffled examples is sorted by length before it is cut into batches: rows of similar length
    share a batch, which halves the padding (a sixth less compute) while the batches stay random. Sorting a whole
    epoch saves more but makes the batches too alike (measured: 85% instead of 99% exact answers). The last
    incomplete batch of an epoch is dropped; which examples fall into it changes from epoch to epoch.
    """
    order = torch.randperm(len(examples), generator=generator).tolist()
    usable = len(order) - len(order) % batch_size
    pool_size = batch_size * batches_per_pool
    batches = []
    for start in range(0, usable, pool_size):
        pool = sorted(order[start : min(start + pool_size, usable)], key=lambda i: len(examples[i][0]))  # stable
        batches += [pool[k : k + batch_size] for k in range(0, len(pool), batch_size)]
    for batch_number in torch.randperm(len(batches), generator=generator).tolist():
        chosen = [examples[i] for i in batches[batch_number]]
        width = max(len(ids) for ids, _ in chosen)
        input_ids = torch.zeros(len(chosen), width, dtype=torch.long)  # right padding with <|pad|> for training
        labels = torch.full((len(chosen), width), -100, dtype=torch.long)
        attention = torch.zeros(len(chosen), width, dtype=torch.long)
        for row, (ids, labs) in enumerate(chosen):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(labs)] = torch.tensor(labs)
            attention[row, : len(ids)] = 1
        yield input_ids, labels, attention


def train(model, examples, steps: int, seed: int, batch_size: int = 24, peak_lr: float = 4e-3,
          device: torch.device | None = None) -> list[float]:
    """AdamW with warm-up and cosine decay over shuffled, length-pooled batches. On a CUDA `device` (other models
    built with this recipe, e.g. scripts/build_course_llama.py) the batches move there and run under bf16 autocast
    where the GPU computes in bf16 (an older one, such as a T4, trains in fp32: fp16 autocast would need loss scaling);
    the tiny model trains on the CPU in fp32, deterministically."""
    generator = torch.Generator().manual_seed(seed)
    cuda = device is not None and device.type == "cuda"
    autocast_bf16 = cuda and compute_dtype(device) == torch.bfloat16
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.98), weight_decay=0.0,
                                  fused=True if cuda else None)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 5%
        if step < warmup:
            return peak_lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return peak_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    losses, step, started = [], 0, time.time()
    model.train()
    while step < steps:
        for input_ids, labels, attention in make_batches(examples, batch_size, generator):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            if cuda:
                input_ids, labels, attention = input_ids.to(device), labels.to(device), attention.to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast_bf16):
                loss = model(input_ids=input_ids, attention_mask=attention, labels=labels, use_cache=False).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % 50 == 0 or step == steps:
                print(f"  step {step:4d}/{steps}  loss {sum(losses[-50:]) / len(losses[-50:]):.3f}  {time.time() - started:5.1f}s", flush=True)
            if step == steps:
                break
    model.eval()
    return losses


@torch.no_grad()
def greedy_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 48) -> list[str]:
    prompts = [tokenizer.apply_chat_template(c[:-1], tokenize=False, add_generation_prompt=True) for c in conversations]
    answers = []
    for start in range(0, len(prompts), 32):
        batch = tokenizer(prompts[start : start + 32], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=[1, 2], pad_token_id=0)
        for row in out[:, batch["input_ids"].shape[1] :]:
            text = tokenizer.decode(row, skip_special_tokens=False)
            if SEPARATOR in text:  # generation stopped here; what follows is batch padding
                text = text[: text.index(SEPARATOR) + len(SEPARATOR)]
            answers.append(text)
    return answers


MODEL_CARD = """# tiny Grok 2 - the course's built-in stand-in

**What it is.** Grok 2's exact architecture (xai-org/grok-2's `config.json` keys, sandwich RMSNorms, grouped-query
attention with tanh-capped logits and the length temperature, a router choosing 2 of 8 GeGLU experts plus a dense
residual MLP, the embedding and output multipliers, final logit capping) at toy size: {params:,} parameters,
{layers} layers, hidden size {hidden}. Its tokenizer has Grok 2's control tokens (`<|pad|>` 0, `<|separator|>` 1,
`<|eos|>` 2), no BOS, and Grok 2's chat template (`Human: ...<|separator|>\\n\\nAssistant:`).

It was trained for {steps} steps (about a minute of CPU time, one thread) by `scripts/build_tiny_grok2.py` on
`data/course_qa.jsonl`, the course's own questions and answers. It answers them in Grok 2's chat format and stops at
`<|separator|>`: greedy answers matched the reference for {accuracy} of those questions when it was built.

**What it is not.** Not Grok 2.5: none of xAI's weights, none of its knowledge. It memorised a few hundred short
answers; anything outside them gets nonsense. It exists so that every lesson runs the real Grok 2 code paths on any
laptop, offline. `config.json` says `"model_type": "git"` exactly like the released file; `import helpers` makes
transformers load it as Grok 2.
"""


def build(out: Path, steps: int, seed: int, report: bool = True) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(THREADS)
    except RuntimeError:  # already fixed, e.g. when build() runs twice in one process
        pass
    torch.use_deterministic_algorithms(True)
    started, started_cpu = time.time(), time.process_time()
    conversations = load_corpus(CORPUS)
    tokenizer = train_tokenizer(conversations)
    examples = [encode_with_answer_mask(tokenizer, c) for c in conversations]
    config = tiny_config()
    model = Grok2ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    print(f"tiny Grok 2: {params:,} parameters; {len(examples)} conversations; longest {max(len(i) for i, _ in examples)} tokens")
    train(model, examples, steps, seed)
    # CPU time too: on a shared machine the wall time mostly measures the other jobs.
    print(f"trained in {time.time() - started:.0f} s wall, {time.process_time() - started_cpu:.0f} s CPU")

    if not report:
        exact = stops = float("nan")
        answers = []
    else:
        answers = greedy_answers(model, tokenizer, conversations)
        references = [c[-1]["content"] + SEPARATOR for c in conversations]
        exact = sum(a.strip() == r.strip() for a, r in zip(answers, references)) / len(references)
        stops = sum(a.rstrip().endswith(SEPARATOR) for a in answers) / len(answers)
    print(f"exact answers: {exact:.1%}   answers ending at {SEPARATOR}: {stops:.1%}   total {time.time() - started:.0f}s")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        (staging / "config.json").write_text(json.dumps(config_file_contents(config), indent=2) + "\n")
        generation = {"eos_token_id": [1, 2], "pad_token_id": 0, "do_sample": False, "max_new_tokens": 64}
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        tokenizer.save_pretrained(staging)
        card = MODEL_CARD.format(params=params, layers=config.num_hidden_layers, hidden=config.hidden_size,
                                 steps=steps, accuracy=f"{exact:.0%}" if report else "(not measured)")
        (staging / "README.md").write_text(card)
        staging.chmod(0o755)  # mkdtemp makes it private; the model is for everyone on the machine
        for path in staging.iterdir():
            path.chmod(0o644)
        if out.exists():
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    print(f"wrote {out} (model.safetensors sha256 {digest[:16]}...) after {time.time() - started:.0f} s wall, "
          f"{time.process_time() - started_cpu:.0f} s CPU")
    print("sample answers:")
    for conversation, answer in list(zip(conversations, answers))[::45]:
        print(f"  Q: {conversation[-2]['content']}\n  A: {answer}")
    misses = [(c, a) for c, a in zip(conversations, answers) if a.strip() != (c[-1]["content"] + SEPARATOR).strip()]
    if misses:
        print(f"answers that differ from the reference ({len(misses)}):")
    for conversation, answer in misses[:8]:
        print(f"  Q: {conversation[-2]['content']}\n  A: {answer}\n  expected: {conversation[-1]['content']}")
    return {"exact": exact, "stops": stops, "seconds": time.time() - started, "sha256": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", action="store_true", help="skip the accuracy report (quick test builds)")
    args = parser.parse_args()
    build(args.out, args.steps, args.seed, report=not args.no_report)


if __name__ == "__main__":
    main()
