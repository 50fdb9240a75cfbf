"""The checks of lesson 05's three exercises:
LoRA fine-tuning: adapter size, before/after answers, a merged adapter."""

from __future__ import annotations

from pathlib import Path

from .checking import Result, fail, grok_config, not_attempted, passed, whole


def check_05_starter(q_proj_lora) -> Result:
    """Parameters a rank-16 LoRA adds to one of Grok 2.5's q_proj matrices."""
    ex = "05 starter"
    if q_proj_lora is None:
        return not_attempted(ex, "Set `q_proj_lora` from r x (in + out) with r = 16.")
    answer = whole(ex, "q_proj_lora", q_proj_lora)
    config = grok_config()
    inputs, outputs = config.hidden_size, config.num_attention_heads * config.head_dim
    expected = 16 * (inputs + outputs)
    if answer == expected:
        return passed(ex, f"{answer:,} parameters (A: 16 x {inputs}, B: {outputs} x 16), "
                           f"{answer / (inputs * outputs):.2%} of the {inputs * outputs:,} weights of q_proj.")
    if answer == inputs * outputs:
        fail(ex, "that is the full matrix; LoRA adds two thin ones: A (r x in) and B (out x r).")
    if answer == 16 * inputs or answer == 16 * outputs:
        fail(ex, "that is only one of the two LoRA matrices; add A (r x in) and B (out x r).")
    fail(ex, f"{answer:,} is not it: r x (in + out), with in = out = 8192 for q_proj.")


def _greedy(model, tokenizer, question) -> str:
    from ..chat import SamplingSettings, generate
    from ..profiles import get_profile

    return generate(model, tokenizer, question, SamplingSettings(max_new_tokens=get_profile().sizes.max_new_tokens)).text


def _same_answer(given: str, reference: str) -> bool:
    """Greedy answers of different lengths agree on their common start: a shorter or longer run is accepted."""
    return bool(given.strip()) and (reference.startswith(given) or given.startswith(reference))


def check_05_practitioner(my_answer_before, my_answer_after, merged=None, fresh_base=None, tokenizer=None,
                          question=None) -> Result:
    """The base model's and the fine-tuned model's greedy answers to the same question of the learner's: both
    re-generated here from `fresh_base` and `merged` and compared with the texts given."""
    ex = "05 practitioner"
    if my_answer_before is None or my_answer_after is None:
        return not_attempted(ex, "Set `fresh_base` (a freshly loaded base model), then `my_answer_before` (its answer) and "
                                  "`my_answer_after` (the merged model's) to the text of their greedy answers.")
    for name, value in (("my_answer_before", my_answer_before), ("my_answer_after", my_answer_after)):
        if not isinstance(value, str):
            fail(ex, f"`{name}` should be the answer's text (a str; a Completion's .text), got "
                      f"{type(value).__name__}.")
    if not my_answer_after.strip():
        fail(ex, "the fine-tuned model's answer is empty.")
    if merged is None or fresh_base is None or tokenizer is None:
        fail(ex, "pass the models and the question too: check_05_practitioner(before, after, merged, fresh_base, "
                  "tokenizer, my_question).")
    if fresh_base is merged:
        fail(ex, "`fresh_base` is the merged model itself: load the untouched base with helpers.load_model().")
    if (not isinstance(question, list) or not question or not all(isinstance(m, dict) for m in question)
            or not any(m.get("role") == "user" and str(m.get("content", "")).strip() for m in question)):
        fail(ex, "`my_question` should be a list of messages with a non-empty user message, e.g. "
                  "[{'role': 'user', 'content': 'Combien de couches a Grok 2.5 ?'}].")
    want_before, want_after = _greedy(fresh_base, tokenizer, question), _greedy(merged, tokenizer, question)
    if want_before == want_after:
        fail(ex, f"the base and the merged model give the same answer ({want_after[:60]!r}): is `fresh_base` freshly loaded "
                  "(helpers.load_model()), and did the training of section 6 run?")
    if _same_answer(my_answer_before, want_after) and _same_answer(my_answer_after, want_before):
        fail(ex, "the two answers are swapped: `my_answer_before` is the base model's, `my_answer_after` the merged one's.")
    if not _same_answer(my_answer_after, want_after):
        also = " (that is the base model's answer)" if _same_answer(my_answer_after, want_before) else ""
        fail(ex, f"`my_answer_after` is not the merged model's greedy answer to your question{also}: it says "
                  f"{want_after[:80]!r}.")
    if not _same_answer(my_answer_before, want_before):
        fail(ex, f"`my_answer_before` is not the base model's greedy answer to your question: it says "
                  f"{want_before[:80]!r}.")
    if my_answer_after == my_answer_before:
        fail(ex, "both answers are identical.")
    return passed(ex, f"before {my_answer_before[:60]!r} / after {my_answer_after[:60]!r}")


def check_05_expert(merged_dir, merged, tokenizer, conversations=None) -> Result:
    """`merged_dir`: the merged model saved as an ordinary checkpoint that loads back with the same logits."""
    ex = "05 expert"
    if merged_dir is None:
        return not_attempted(ex, "Save the merged model (save_pretrained + the tokenizer) and set `merged_dir` to "
                                  "that folder.")
    import json

    import torch

    from .. import finetune
    from ..loading import load_model

    folder = Path(merged_dir)
    if not (folder / "config.json").is_file():
        fail(ex, f"{folder} has no config.json: call merged.save_pretrained(merged_dir).")
    if (folder / "adapter_config.json").exists():
        fail(ex, f"{folder} holds an adapter, not a merged model: merge_and_unload() first, then save_pretrained.")
    if not list(folder.glob("*.safetensors")):
        fail(ex, f"{folder} has no weights (*.safetensors).")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        fail(ex, f"{folder} has no tokenizer: tokenizer.save_pretrained(merged_dir) too, so it can be served alone.")
    if any("lora" in name for name, _ in merged.named_modules()):
        fail(ex, "the model you passed still has LoRA layers: pass the merged one (merge_and_unload()).")
    if conversations is None:
        from ..paths import DATA_DIR

        conversations = finetune.load_chat_jsonl(DATA_DIR / "finetune" / "faq_fr_heldout.jsonl")[:4]
    standalone = load_model(folder, verbose=False)
    gap = finetune.max_logit_difference(merged, standalone, tokenizer, conversations)
    tolerance = 1e-5 if merged.dtype == torch.float32 else 1e-2
    if not gap < tolerance:
        fail(ex, f"the reloaded model differs from the merged one by {gap:.2e} in the logits (tolerance "
                  f"{tolerance:g}): was the folder written from another model?")
    architectures = json.loads((folder / "config.json").read_text()).get("architectures")
    return passed(ex, f"{folder.name} loads alone ({architectures}), max logit difference {gap:.1e}: ready for "
                       "SGLang or vLLM.")
