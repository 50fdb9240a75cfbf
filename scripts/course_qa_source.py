"""The tiny Grok 2's training corpus, as (question paraphrases, answer) pairs. Writes data/course_qa.jsonl.

No answer may contain a control token such as <|separator|> as text: the model would stop there.
Facts come from shared grok2-facts.md (with its sources); the wording is the course's own. Each entry is one short
conversation in the chat format; a few carry a system prompt or a second turn so the model sees those formats too.
Run: python scripts/course_qa_source.py
"""

from __future__ import annotations

import json
from pathlib import Path

QA = [
    # --- who the tiny model is
    (["What is your name?", "Who are you?", "What are you?"],
     "I am tiny Grok 2, the course's stand-in: Grok 2's architecture at toy size, trained on the course notes."),
    (["Are you the real Grok 2.5?", "Are you Grok 2.5 itself?"],
     "No. I have Grok 2's architecture but under a million parameters and none of its weights."),
    (["What do you know?", "What can you answer?"],
     "Short questions about this course and about Grok 2.5. Anything else gets nonsense from me."),
    (["What is the weather today?", "Who won the football match?", "Write me a poem about cats."],
     "I don't know. I am the tiny stand-in and only learned the course notes."),
    (["How were you trained?", "How was the tiny model trained?"],
     "For about a minute on a CPU, on the course's own questions and answers, by scripts/build_tiny_grok2.py."),
    (["How big is the tiny model?", "How many parameters does the tiny Grok 2 have?"],
     "Under a million parameters, a few megabytes: small enough to run on any laptop CPU."),
    (["Why does the course use a tiny model?", "Why a stand-in model?"],
     "Grok 2.5 needs about 540 GB and 8 GPUs. The tiny model runs the same code paths on any CPU, offline."),
    # --- Grok 2.5 size and architecture
    (["How many parameters does Grok 2.5 have?", "How big is Grok 2.5?", "How large is Grok 2?"],
     "About 270 billion parameters in total, of which about 115 billion are active for each token."),
    (["How many parameters are active per token?", "What are the active parameters of Grok 2?"],
     "About 115 billion: attention, the dense MLP, 2 of the 8 experts and the embeddings."),
    (["How many experts does Grok 2 have?", "How many experts are in Grok 2.5?"],
     "8 experts per layer, and each token uses 2 of them."),
    (["How many experts does each token use?", "What is the top-k of Grok 2's router?"],
     "2 experts per token, chosen by the router."),
    (["What is the residual MoE?", "What does residual_moe mean?"],
     "Besides the 2 experts, every token also runs through a dense MLP; the two outputs are summed and divided by sqrt(2)."),
    (["How many layers does Grok 2 have?", "How deep is Grok 2.5?"],
     "64 layers."),
    (["What is Grok 2's hidden size?", "How wide is Grok 2?"],
     "The hidden size is 8192."),
    (["How many attention heads does Grok 2 have?", "How many query heads does Grok 2 use?"],
     "64 query heads and 8 key/value heads, each 128 wide: grouped-query attention."),
    (["What is grouped-query attention?", "Why does Grok 2 have only 8 KV heads?"],
     "8 query heads share each key/value head, so the KV cache is 8 times smaller."),
    (["What is Grok 2's vocabulary size?", "How many tokens are in Grok 2's vocabulary?"],
     "131072 tokens."),
    (["What is Grok 2's context length?", "How long a context does Grok 2 support?"],
     "131072 tokens, that is 128K."),
    (["What are sandwich norms?", "How are the norms placed in Grok 2?"],
     "Each attention and MoE block has an RMSNorm before it and another after it."),
    (["What is softcapping?", "What does logit softcapping do?"],
     "It squashes logits with cap times tanh of x over cap: 30 for attention and router, 50 for the output."),
    (["What is the attention temperature?", "What does attn_temperature_len do?"],
     "Beyond position 1024, attention scores are multiplied by log2 of the position over 10, to stay sharp."),
    (["What RoPE does Grok 2 use?", "What is Grok 2's rope theta?"],
     "Plain rotary embeddings with theta 208533496, as SGLang reads the config."),
    (["What activation does Grok 2 use?", "What kind of MLP do the experts use?"],
     "Gated GELU: down of gelu of gate times up."),
    (["Does the router renormalise the top-2 weights?", "Are the expert weights renormalised?"],
     "No. The two softmax probabilities are used as they are, so they sum to less than 1."),
    (["What is the embedding multiplier?", "Why are the embeddings scaled?"],
     "Embeddings are multiplied by sqrt(8192), about 90.5."),
    # --- memory and hardware
    (["How much memory does Grok 2.5 need in bf16?", "How big are the bf16 weights?"],
     "About 540 GB of weights in bf16, around 502 GiB."),
    (["How much memory does Grok 2.5 need in FP8?", "How big is Grok 2 in FP8?"],
     "About 270 GB in FP8, roughly 34 GB per GPU on 8 GPUs."),
    (["How big is Grok 2.5 in 4-bit?", "How much memory for 4-bit Grok 2?"],
     "About 140 GB in 4-bit, still too big for one GPU."),
    (["Can I run Grok 2.5 on a 24 GB GPU?", "Does Grok 2 fit on an RTX 4090?", "Is a 24 GB GPU enough for Grok 2.5?"],
     "No. Even 4-bit weights are about 140 GB. The article's 24 GB claim is wrong."),
    (["Can I run Grok 2.5 on one H100?", "Does Grok 2 fit on a single 80 GB GPU?"],
     "No. One 80 GB GPU cannot hold it at any practical precision."),
    (["How many GPUs does Grok 2.5 need?", "What hardware does Grok 2.5 need?"],
     "8 GPUs with more than 40 GB each, using FP8 with SGLang."),
    (["How big is the KV cache of Grok 2?", "How much KV cache per token?"],
     "256 KiB per token in bf16: 2 GiB for 8K tokens, 32 GiB for 128K tokens."),
    (["What does the memory planner do?", "What is plan_memory?"],
     "It builds the model on the meta device from its config and counts parameters, bytes and GPUs needed."),
    (["What is the meta device?", "Why use the meta device?"],
     "Tensors on the meta device have shapes but no memory, so even Grok 2.5 can be built in a second."),
    # --- files and download
    (["How big is the Grok 2 download?", "How large is the xai-org/grok-2 repository?"],
     "About 500 GB in 42 files."),
    (["Why is the checkpoint pre-sharded?", "What does TP=8 mean for the checkpoint?"],
     "The expert weights are split in 8 tensor-parallel slices, one per GPU, so SGLang needs --tp 8."),
    (["How do I download Grok 2?", "How do I get the weights?"],
     "Use hf download xai-org/grok-2 --local-dir, or git lfs clone with care: lesson 01."),
    (["What is an LFS pointer?", "What is a Git LFS pointer file?"],
     "A tiny text file with a version, a sha256 oid and a size, standing in for the real file."),
    (["What does HeaderTooLarge mean?", "Why do I get HeaderTooLarge?"],
     "You loaded a Git LFS pointer instead of the weights. Run git lfs pull first."),
    (["What does GIT_LFS_SKIP_SMUDGE do?", "How do I clone without the weights?"],
     "GIT_LFS_SKIP_SMUDGE=1 clones only pointers; then git lfs pull --include picks the files you want."),
    (["How long does the download take?", "How long to download 500 GB?"],
     "About 11 hours at 100 Mb/s, 67 minutes at 1 Gb/s and 7 minutes at 10 Gb/s."),
    # --- transformers and loading
    (["Can I load Grok 2 with AutoModelForCausalLM?", "Does transformers support Grok 2?"],
     "Not out of the box. Import helpers first: the course adds Grok 2 to transformers."),
    (["Why does the article's code fail?", "What is wrong with the article's snippet?"],
     "config.json says model_type git, so transformers builds the GIT captioning model, not Grok 2."),
    (["What is model_type git?", "Why does the config say git?"],
     "A mistake in the released config. helpers loads any config with Grok1ForCausalLM as Grok 2."),
    (["What does load_model do?", "What is helpers.load_model?"],
     "It picks dtype and devices for your machine, checks that the model fits, then loads it safely."),
    (["Which dtype should I use on a T4?", "Does a T4 support bf16?"],
     "fp16. The T4 has no bf16; that needs compute capability 8.0 or newer."),
    (["What is device_map auto?", "What does device_map do?"],
     "It spreads layers over GPUs, then CPU and disk. Offloaded layers are correct but slow."),
    # --- tokenizer and chat format
    (["What is Grok 2's chat format?", "What prompt format does Grok 2 expect?"],
     "Human: then your question, the separator token and two newlines, then Assistant: and the model answers."),
    (["What is the separator token?", "What does <|separator|> do?"],
     "It ends every turn, so generation stops when the model emits the separator token, id 1."),
    (["What are Grok 2's special tokens?", "Which ids do the special tokens have?"],
     "pad is id 0, separator is id 1 and eos is id 2. There is no BOS token."),
    (["What tokenizer does Grok 2 use?", "Where is Grok 2's tokenizer?"],
     "A tiktoken file, tokenizer.tok.json. The community tokenizer.json is alvarobartt/grok-2-tokenizer."),
    (["Is Grok 2.5 a chat model?", "Is Grok 2 post-trained?"],
     "Yes, it is post-trained: always use its chat template."),
    (["How do I write a system prompt?", "What is the system format?"],
     "System: then your instructions and the separator token, before the first Human turn."),
    # --- serving
    (["How do I serve Grok 2.5?", "What is the official way to run Grok 2?"],
     "With SGLang: python3 -m sglang.launch_server --model the folder --tp 8 --quantization fp8 --attention-backend triton."),
    (["Why the triton attention backend?", "Why --attention-backend triton?"],
     "SGLang's Triton kernels implement Grok 2's softcapping and attention temperature."),
    (["Can vLLM run Grok 2?", "Does vLLM support Grok 2.5?"],
     "Yes, vLLM supports Grok 2; it needs tiktoken for tokenizer.tok.json."),
    (["Can I run Grok 2 with llama.cpp?", "Is there a GGUF of Grok 2?"],
     "Yes, GGUF quants exist for big CPU and Apple machines, but llama.cpp differs in RoPE and routing."),
    (["What port does SGLang use?", "Where does the SGLang server listen?"],
     "Port 30000 by default, with OpenAI-compatible endpoints."),
    # --- license
    (["What is Grok 2.5's license?", "Which license does Grok 2 use?"],
     "The xAI Community License Agreement, which replaced the Grok 2 Community License in November 2025."),
    (["Can I fine-tune Grok 2?", "Does the license allow fine-tuning?"],
     "Yes. Fine-tuning Grok 2 itself is allowed; using it to train other models is not."),
    (["Can I use Grok 2 outputs to train another model?", "Can I distill Grok 2?"],
     "No. The license forbids using the model or its outputs to train other large models."),
    (["When was Grok 2.5 released?", "When did xAI open Grok 2.5?"],
     "In August 2025, on Hugging Face as xai-org/grok-2."),
    # --- the course
    (["What is this course?", "What does the course teach?"],
     "How to run Grok 2.5 yourself: set up, download, load, quantize, prompt, fine-tune with LoRA and deploy."),
    (["What lessons are there?", "What is the course plan?"],
     "00 setup, 01 download, 02 loading, 03 quantization, 04 prompting, 05 LoRA fine-tuning, 06 deployment."),
    (["What is lesson 00 about?", "What does the setup lesson do?"],
     "It checks your machine with OK, WARN and FAIL lines and shows what each machine can run."),
    (["What is lesson 01 about?", "What does the download lesson teach?"],
     "Downloading weights with Git LFS and hf download: pointers, selective pulls, checksums and resuming."),
    (["What is lesson 02 about?", "What does the loading lesson teach?"],
     "Grok 2's config, its memory plan, why the article's code fails, and the model's insides."),
    (["What is lesson 03 about?", "What does the quantization lesson teach?"],
     "8-bit and 4-bit weights with bitsandbytes: memory, quality and speed, measured."),
    (["What is lesson 04 about?", "What does the prompting lesson teach?"],
     "The chat template, sampling settings, streaming and a chat widget."),
    (["What is lesson 05 about?", "Which lesson explains LoRA fine-tuning?"],
     "Lesson 05: LoRA and QLoRA fine-tuning, from one CPU to a multi-GPU node."),
    (["What is lesson 06 about?", "Which lesson covers deployment?"],
     "Lesson 06: an OpenAI-compatible server, SGLang and vLLM commands, and clients."),
    (["What are the profiles?", "Which profiles does the course have?"],
     "tiny, small and grok-2. Set GROK2_COURSE_PROFILE to choose one; tiny is the default."),
    (["How do I choose a profile?", "How do I switch to the small profile?"],
     "Set GROK2_COURSE_PROFILE=small before starting Jupyter."),
    (["What is the tiny profile?", "What does the tiny profile run?"],
     "The built-in tiny Grok 2, on any CPU, offline."),
    (["What is the small profile?", "Which model does the small profile use?"],
     "ibm-granite/granite-3.1-3b-a800m-instruct, a mixture-of-experts model that fits a free Colab T4."),
    (["What is the grok-2 profile?", "What does the grok-2 profile need?"],
     "The real xai-org/grok-2, on a node with 8 large GPUs."),
    (["What is the helpers package?", "What does helpers do?"],
     "It does the heavy lifting for the lessons: profiles, loading, memory plans and Grok 2 itself."),
    (["How do I start the course?", "How do I open the course?"],
     "Run bash scripts/course.sh lab from the repository folder."),
    (["How do I run the tests?", "How do I test the course?"],
     "Run bash scripts/course.sh test."),
    (["What is LoRA?", "How does LoRA work?"],
     "LoRA trains two small low-rank matrices beside frozen weights, so only a few parameters learn."),
    (["What is QLoRA?", "How is QLoRA different from LoRA?"],
     "QLoRA keeps the base model in 4-bit and trains LoRA adapters on top."),
    (["Should I train the router?", "Why keep the router frozen?"],
     "Usually not: changing it moves tokens between experts and can undo what the experts learned."),
    (["What is quantization?", "What does 4-bit quantization do?"],
     "It stores weights in fewer bits to save memory, at a small cost in quality."),
    (["What is Grok 3?", "Is Grok 3 open source?"],
     "This course is about Grok 2.5; I only know its notes."),
]

SYSTEM_EXAMPLES = [
    ("You are a helpful assistant for the Grok 2.5 course.", "How many experts does Grok 2 have?",
     "8 experts per layer, and each token uses 2 of them."),
    ("Answer in one short sentence.", "How many layers does Grok 2 have?", "64 layers."),
    ("You are a helpful assistant for the Grok 2.5 course.", "What is your name?",
     "I am tiny Grok 2, the course's stand-in: Grok 2's architecture at toy size, trained on the course notes."),
]

TWO_TURN_EXAMPLES = [
    (("What is Grok 2's hidden size?", "The hidden size is 8192."),
     ("How many layers does Grok 2 have?", "64 layers.")),
    (("What is your name?", "I am tiny Grok 2, the course's stand-in: Grok 2's architecture at toy size, trained on the course notes."),
     ("How many experts does Grok 2 have?", "8 experts per layer, and each token uses 2 of them.")),
]


def conversations() -> list[dict]:
    rows = []
    for questions, answer in QA:
        for question in questions:
            rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    for system, question, answer in SYSTEM_EXAMPLES:
        rows.append({"messages": [{"role": "system", "content": system}, {"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}]})
    for (q1, a1), (q2, a2) in TWO_TURN_EXAMPLES:
        rows.append({"messages": [{"role": "user", "content": q1}, {"role": "assistant", "content": a1},
                                  {"role": "user", "content": q2}, {"role": "assistant", "content": a2}]})
    return rows


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "data" / "course_qa.jsonl"
    rows = conversations()
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} conversations to {out}")
