"""The checks of lesson 06's three exercises:
deployment: a request with a system prompt, the largest batch, the load-test curve."""

from __future__ import annotations

from .checking import Result, fail, not_attempted, number, passed, whole


def check_06_starter(starter) -> Result:
    """The openai client's reply to a question with a system prompt."""
    ex = "06 starter"
    if starter is None:
        return not_attempted(ex, "Set `starter` to client.chat.completions.create(...) with a system and a user "
                                  "message.")
    choices = getattr(starter, "choices", None)
    if not choices:
        fail(ex, f"`starter` should be the ChatCompletion the client returns, got {type(starter).__name__}.")
    choice = choices[0]
    if not (choice.message.content or "").strip():
        fail(ex, "the reply has no text.")
    if choice.finish_reason != "stop":
        fail(ex, f"finish_reason is {choice.finish_reason!r}: the answer was cut; leave max_tokens at its default or "
                  "raise it.")
    if starter.usage is None or starter.usage.prompt_tokens <= 10:
        fail(ex, "the prompt is very short: send the system message too, before the question.")
    return passed(ex, f"{choice.message.content!r} ({starter.usage.prompt_tokens} prompt tokens, "
                       f"{starter.usage.completion_tokens} generated)")


def check_06_practitioner(largest, client, model_name: str) -> Result:
    """The largest max_tokens the server accepts for the message "hi"."""
    ex = "06 practitioner"
    if largest is None:
        return not_attempted(ex, "Set `largest` from the error message of a request whose max_tokens is too large.")
    answer = whole(ex, "largest", largest)
    import openai

    messages = [{"role": "user", "content": "hi"}]
    try:
        client.chat.completions.create(model=model_name, messages=messages, max_tokens=answer, temperature=0)
    except openai.BadRequestError as error:
        fail(ex, f"max_tokens={answer} is refused ({error.message[:120]}): your figure is too large.")
    try:
        client.chat.completions.create(model=model_name, messages=messages, max_tokens=answer + 1, temperature=0)
    except openai.BadRequestError:
        return passed(ex, f"max_tokens={answer} is accepted and {answer + 1} refused: prompt + max_tokens must fit "
                           "the model's context.")
    fail(ex, f"max_tokens={answer + 1} is accepted too: {answer} is not the largest.")


def check_06_expert(curve) -> Result:
    """`curve`: {concurrency: tokens_per_s} for concurrency 1, 2, 4 and 8."""
    ex = "06 expert"
    if curve is None:
        return not_attempted(ex, "Set `curve` to {1: ..., 2: ..., 4: ..., 8: ...} tokens/s from serve.load_test.")
    if not isinstance(curve, dict):
        fail(ex, f"`curve` should be a dict {{concurrency: tokens_per_s}}, got {type(curve).__name__}.")
    if sorted(curve) != [1, 2, 4, 8]:
        fail(ex, f"concurrency levels {sorted(curve)}; expected exactly 1, 2, 4 and 8.")
    values = {c: number(ex, f"curve[{c}]", v) for c, v in curve.items()}
    if any(v <= 0 for v in values.values()):
        fail(ex, "every throughput must be positive (did a load test fail? check its 'errors').")
    best = max(values, key=values.get)
    return passed(ex, "tokens/s " + ", ".join(f"{c}: {values[c]:.0f}" for c in sorted(values)) +
                   f"; the best here is concurrency {best}.")
