"""Lesson 04 (prompting: the chat template, sampling settings, an OpenAI stream): the checks of its three exercises."""

from __future__ import annotations

from .checking import Result, fail, not_attempted, passed, skipped


STARTER_04 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is QLoRA?"}]


def check_04_starter(rendered, tokenizer) -> Result:
    """The string the model receives for the system prompt "Be brief." and the question "What is QLoRA?"."""
    ex = "04 starter"
    if rendered is None:
        return not_attempted(ex, "Set `starter` to render(tokenizer, [system message, user message]).")
    if not isinstance(rendered, str):
        fail(ex, f"`starter` should be the rendered string, got {type(rendered).__name__} (use render(), not the "
                  "token ids).")
    from ..chat import render

    expected = render(tokenizer, STARTER_04)
    if rendered == expected:
        return passed(ex, f"the model receives {rendered!r}")
    if "Be brief." not in rendered:
        fail(ex, "the system prompt 'Be brief.' is missing: it is a message with role 'system', before the question.")
    if "What is QLoRA?" not in rendered:
        fail(ex, "the question 'What is QLoRA?' is missing.")
    if rendered == render(tokenizer, STARTER_04, add_generation_prompt=False):
        fail(ex, "the generation prompt is missing: the string must end by opening the assistant's turn.")
    fail(ex, f"not what the chat template writes; compare with render(tokenizer, messages). You have {rendered!r}")


NAME_QUESTION = [{"role": "user", "content": "What is your name?"}]
MODEL_NAMES = ("Grok", "Granite")  # what the profiles' models call themselves (tiny and grok-2: Grok; small: Granite)


def own_name(model, tokenizer) -> tuple[str | None, str]:
    """(the name the model gives itself in its default answer to "What is your name?", that answer)."""
    import re

    from ..chat import generate

    answer = generate(model, tokenizer, NAME_QUESTION).text
    found = [(match.start(), name) for name in MODEL_NAMES for match in re.finditer(rf"\b{name}\b", answer)]
    return (min(found)[1] if found else None), answer


def check_04_practitioner(settings, model, tokenizer) -> Result:
    """SamplingSettings under which the answer to "What is your name?" ends right after the model's own name (Grok
    for the tiny Grok 2 and Grok 2.5), finish reason stop."""
    ex = "04 practitioner"
    if settings is None:
        return not_attempted(ex, "Set `practitioner_settings` to a SamplingSettings(...) (hint: a stop string).")
    from ..chat import SamplingSettings, generate

    if not isinstance(settings, SamplingSettings):
        fail(ex, f"`practitioner_settings` should be a SamplingSettings, got {type(settings).__name__}.")
    name, default = own_name(model, tokenizer)
    if name is None:
        return skipped(ex, f"this model's answer names none of {', '.join(MODEL_NAMES)} ({default[:80]!r}), so "
                            "there is no name to stop after; the tiny profile has one.")
    reply = generate(model, tokenizer, NAME_QUESTION, settings)
    if not reply.text.rstrip().endswith(name):
        fail(ex, f"the answer is {reply.text!r}: it should end right after {name!r}. Put what comes after it in "
                  "`stop` (keep the separator there too).")
    if reply.finish_reason != "stop":
        fail(ex, f"the answer ends with {name!r} but finish_reason is {reply.finish_reason!r}: it ran out of tokens "
                  "rather than hitting a stop string.")
    return passed(ex, f"{reply.text!r}, finish reason 'stop' (stop strings are cut off, not returned).")


def check_04_expert(openai_chunks, model, tokenizer) -> Result:
    """`openai_chunks(messages, settings)`: a stream turned into OpenAI's chat.completion.chunk dictionaries."""
    ex = "04 expert"
    if openai_chunks is None:
        return not_attempted(ex, "Define `def openai_chunks(messages, settings=SamplingSettings()): ...` that "
                                  "yields the chunks.")
    if not callable(openai_chunks):
        fail(ex, f"`openai_chunks` should be a function, got {type(openai_chunks).__name__}.")
    from ..chat import generate

    messages = [{"role": "user", "content": "What is QLoRA?"}]
    try:
        chunks = list(openai_chunks(messages))
    except Exception as error:  # noqa: BLE001 - the learner's code
        fail(ex, f"openai_chunks(messages) raised {type(error).__name__}: {error}")
    if len(chunks) < 2:
        fail(ex, f"{len(chunks)} chunk(s): expect one per streamed piece, then a final one.")
    try:
        choices = [c["choices"][0] for c in chunks]
    except (KeyError, IndexError, TypeError):
        fail(ex, "every chunk is a dict {'choices': [{'delta': {...}, 'finish_reason': ...}]}.")
    expected = generate(model, tokenizer, messages)
    text = "".join((c.get("delta") or {}).get("content") or "" for c in choices)
    if text != expected.text:
        fail(ex, f"the deltas join to {text!r}, but the model's answer is {expected.text!r}.")
    if any(c.get("finish_reason") is not None for c in choices[:-1]):
        fail(ex, "only the last chunk carries a finish_reason; the others have None.")
    if choices[-1].get("delta") not in ({}, None) and (choices[-1]["delta"].get("content") or ""):
        fail(ex, "the last chunk's delta should be empty ({}).")
    if choices[-1].get("finish_reason") != expected.finish_reason:
        fail(ex, f"last finish_reason {choices[-1].get('finish_reason')!r}, expected {expected.finish_reason!r}.")
    if chunks[-1].get("usage") != expected.usage:
        fail(ex, f"the last chunk's usage is {chunks[-1].get('usage')!r}; expected {expected.usage!r} "
                  "(the stream's completion.usage).")
    return passed(ex, f"{len(chunks)} chunks that a client joins into {expected.text!r}, usage {expected.usage}.")
