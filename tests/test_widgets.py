"""The chat widget and the playground, driven headlessly: build, send, receive a streamed reply, stop, clear."""

from __future__ import annotations

import threading
import time

import pytest

from helpers.chat import SEPARATOR, SamplingSettings, generate
from helpers.widgets import ChatWidget, SamplingPlayground


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # model, tokenizer: tests/conftest.py


def expected(model, tokenizer, messages):
    return generate(model, tokenizer, messages).text


def test_chat_widget_streams_a_reply_and_keeps_the_conversation(model, tokenizer):
    threads = threading.active_count()
    chat = ChatWidget(model, tokenizer)
    chat.input.value = "How many experts does Grok 2 have?"
    chat.send_button.click()  # exactly what a click in JupyterLab does
    assert chat.wait()
    assert chat.last_reply == expected(model, tokenizer, [{"role": "user", "content": chat.messages[0]["content"]}])
    assert chat.last_reply.startswith("8 experts")
    assert "tokens/s" in chat.stats.value and "first token after" in chat.stats.value and "finish: stop" in chat.stats.value
    assert "How many experts" in chat.transcript.value and chat.last_reply in chat.transcript.value
    assert chat.input.value == "" and chat.reply.value == ""
    assert not chat.send_button.disabled and chat.stop_button.disabled
    assert chat.send("What is your name?")
    assert chat.wait()
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert chat.last_reply == expected(model, tokenizer, chat.messages[:3])
    assert len(chat.completions) == 2 and all(c.finish_reason == "stop" for c in chat.completions)
    assert not chat.send("   ")  # nothing to send
    assert threading.active_count() == threads


def test_chat_widget_stop_button_ends_a_reply(model, tokenizer):
    threads = threading.active_count()
    endless = SamplingSettings(stop=(), stop_token_ids=(), max_new_tokens=5000)
    chat = ChatWidget(model, tokenizer, endless, system_prompt="You are a helpful assistant for the Grok 2.5 course.")
    assert chat.send("What is your name?")
    deadline = time.monotonic() + 60
    while not chat.reply.value and time.monotonic() < deadline:  # the first streamed piece has arrived
        time.sleep(0.01)
    assert chat.reply.value.startswith("<p><b>Grok:</b>")
    assert not chat.send("a second message while the first streams")  # refused: one reply at a time
    chat.stop_button.click()
    assert chat.wait(60)
    done = chat.completions[-1]
    assert done.interrupted and done.completion_tokens < 5000 and "stopped by you" in chat.stats.value
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant"]
    chat.clear_button.click()
    assert [m["role"] for m in chat.messages] == ["system"] and "System:" in chat.transcript.value
    chat.close()
    assert threading.active_count() == threads


def test_playground_updates_plot_and_answer(model, tokenizer):
    question = [{"role": "user", "content": "What is your name?"}]
    playground = SamplingPlayground(model, tokenizer, question)
    playground.temperature.value = 0.0  # triggers update through the observer, like moving the slider
    distribution, completion = playground.last
    assert list(distribution.stages) == ["model", "greedy"] and distribution.after[0] == 1.0
    assert completion.text == expected(model, tokenizer, question)[: len(completion.text)]
    assert bytes(playground.plot.value).startswith(b"\x89PNG")
    playground.top_k.value = 3
    playground.temperature.value = 1.0
    distribution, _ = playground.last
    assert list(distribution.stages) == ["model", "top_k=3", "top_p=0.95"]  # temperature 1 is no change
    playground.temperature.value = 0.0
    playground.stops.value = False  # no stop ids or strings: the answer runs on past the separator
    _, runaway = playground.last
    assert SEPARATOR in runaway.text and runaway.finish_reason == "length"


def test_loss_curve_draws_without_a_notebook(tmp_path):
    from helpers.widgets import LossCurve

    curve = LossCurve(total_steps=4, min_interval=0.0)
    history = [{"step": 0, "heldout_loss": 3.0}, {"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0, "heldout_loss": 2.2}]
    for record in history:
        curve(record, history)
    assert curve.draws == 3 and curve.handle is None
    assert curve.save(tmp_path / "curve.png").stat().st_size > 1000
