"""The checks of lesson 06's three exercises:
deployment: a request with a system prompt, the largest max_tokens, where concurrency stops paying."""

from __future__ import annotations

from .checking import Result, fail, not_attempted, number, passed, whole


STARTER_06 = [{"role": "system", "content": "Answer in one short sentence."},
              {"role": "user", "content": "How many layers does Grok 2 have?"}]


def _prompt_tokens(client, model_name: str, messages) -> int:
    """What the server counts for `messages` (a one-token request: the count, not the answer)."""
    reply = client.chat.completions.create(model=model_name, messages=messages, max_tokens=1, temperature=0)
    return reply.usage.prompt_tokens


def check_06_starter(starter, messages=None, client=None, model_name: str | None = None) -> Result:
    """The openai client's reply to the question with the system prompt: the messages are the question's, and the
    server counted exactly those messages' tokens for the reply."""
    ex = "06 starter"
    if starter is None:
        return not_attempted(ex, "Set `starter_messages` (a system and a user message) and `starter` to "
                                  "client.chat.completions.create(model=..., messages=starter_messages).")
    choices = getattr(starter, "choices", None)
    if not choices:
        fail(ex, f"`starter` should be the ChatCompletion the client returns, got {type(starter).__name__}.")
    choice = choices[0]
    if not (choice.message.content or "").strip():
        fail(ex, "the reply has no text.")
    if choice.finish_reason != "stop":
        fail(ex, f"finish_reason is {choice.finish_reason!r}: the answer was cut; leave max_tokens at its default or "
                  "raise it.")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        fail(ex, "pass the messages you sent too (a list of {'role': ..., 'content': ...} dicts).")
    roles = [m.get("role") for m in messages]
    if "system" not in roles:
        fail(ex, "there is no system message: it comes first, with role 'system'.")
    system = next(m for m in messages if m.get("role") == "system")
    if (system.get("content") or "").strip() != STARTER_06[0]["content"]:
        fail(ex, f"the system prompt is {system.get('content')!r}; the question asks for "
                  f"{STARTER_06[0]['content']!r}.")
    if roles != ["system", "user"] or (messages[1].get("content") or "").strip() != STARTER_06[1]["content"]:
        fail(ex, f"the messages should be the system prompt, then the user's question {STARTER_06[1]['content']!r}.")
    if starter.usage is None:
        fail(ex, "the reply has no usage counts: is it the object the client returned?")
    if client is not None:
        counted = _prompt_tokens(client, model_name, STARTER_06)
        if starter.usage.prompt_tokens != counted:
            alone = _prompt_tokens(client, model_name, STARTER_06[1:])
            hint = " (that is the question without the system prompt)" if starter.usage.prompt_tokens == alone else ""
            fail(ex, f"the reply was made from {starter.usage.prompt_tokens} prompt tokens{hint}; these messages are "
                      f"{counted}: send exactly `starter_messages`.")
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


PAYS_OFF = 1.10  # the question's rule: doubling the concurrency pays while it adds at least 10% throughput


def _summary(ex: str, level: int, value) -> dict:
    """A load test's summary (a LoadTestResult or its .summary()), checked for being one."""
    if hasattr(value, "summary"):
        value = value.summary()
    if not isinstance(value, dict) or not {"tokens_per_s", "completion_tokens", "wall_s"} <= set(value):
        fail(ex, f"curve[{level}] should be what serve.load_test(...).summary() returns, got {type(value).__name__} "
                  f"{str(value)[:60]}: a bare number cannot be checked.")
    if value.get("concurrency") != level:
        fail(ex, f"curve[{level}] is the summary of a test at concurrency {value.get('concurrency')}.")
    if value.get("stream"):
        fail(ex, f"curve[{level}] was measured with stream=True: the question is about batched, non-streaming requests.")
    if value.get("errors"):
        fail(ex, f"curve[{level}] had {value['errors']} failed request(s): run it again (check the server).")
    tokens, wall = number(ex, f"curve[{level}]['completion_tokens']", value["completion_tokens"]), \
        number(ex, f"curve[{level}]['wall_s']", value["wall_s"])
    if tokens <= 0 or wall <= 0 or value.get("requests", 0) < level:
        fail(ex, f"curve[{level}] measured nothing ({tokens:.0f} tokens in {wall} s, {value.get('requests')} requests "
                  f"for concurrency {level}).")
    if abs(number(ex, f"curve[{level}]['tokens_per_s']", value["tokens_per_s"]) - tokens / wall) > 0.1 + 1e-3 * tokens / wall:
        fail(ex, f"curve[{level}]: tokens_per_s {value['tokens_per_s']} is not completion_tokens / wall_s "
                  f"({tokens / wall:.1f}): keep the summary as load_test returned it.")
    return value


def stops_paying(throughput: dict[int, float], gain: float = PAYS_OFF) -> int:
    """The first concurrency (1, 2 or 4) whose doubling adds less than `gain` - 1 throughput; 8 if every doubling pays."""
    for level in (1, 2, 4):
        if throughput[2 * level] < gain * throughput[level]:
            return level
    return 8


def check_06_expert(curve, stops_paying_at=None) -> Result:
    """`curve`: {concurrency: load-test summary} for 1, 2, 4 and 8; `stops_paying_at`: the decision read from it."""
    ex = "06 expert"
    if curve is None:
        return not_attempted(ex, "Set `curve` to {1: ..., 2: ..., 4: ..., 8: ...}, each serve.load_test(...).summary(), "
                                  "and `stops_paying_at` to your decision.")
    if not isinstance(curve, dict):
        fail(ex, f"`curve` should be a dict {{concurrency: summary}}, got {type(curve).__name__}.")
    if sorted(curve) != [1, 2, 4, 8]:
        fail(ex, f"concurrency levels {sorted(curve)}; expected exactly 1, 2, 4 and 8.")
    summaries = {level: _summary(ex, level, value) for level, value in curve.items()}
    throughput = {level: summary["tokens_per_s"] for level, summary in summaries.items()}
    shown = ", ".join(f"{c}: {throughput[c]:.0f}" for c in sorted(throughput))
    if stops_paying_at is None:
        return not_attempted(ex, f"the curve is measured (tokens/s {shown}); now set `stops_paying_at`: the first "
                                  f"concurrency whose doubling adds less than {PAYS_OFF - 1:.0%} throughput (8 if every doubling pays).")
    decision = whole(ex, "stops_paying_at", stops_paying_at)
    expected = stops_paying(throughput)
    if decision not in (1, 2, 4, 8):
        fail(ex, f"`stops_paying_at` is one of the measured levels 1, 2, 4 or 8, not {decision}.")
    rule = f"{PAYS_OFF - 1:.0%}"
    if decision != expected:
        level = min(decision, expected)  # the first doubling the two readings disagree on (always below 8)
        fail(ex, f"not what your curve says (tokens/s {shown}): from {level} to {2 * level} the throughput changes "
                  f"x{throughput[2 * level] / throughput[level]:.2f}; doubling pays while it adds at least {rule}.")
    verdict = (f"past concurrency {expected}, more requests at once add less than {rule}: the batch is as wide as "
               "this machine makes useful" if expected < 8 else "every doubling still paid: try 16")
    return passed(ex, f"tokens/s {shown}; {verdict}.")
