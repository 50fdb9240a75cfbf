"""The chat widget and the playground, driven headlessly: build, send, receive a streamed reply."""

from __future__ import annotations

import threading

import helpers
from helpers.widgets import ChatWidget, SamplingPlayground


def test_chat_widget_streams_a_reply_and_keeps_the_conversation():
    model, tokenizer = helpers.load_model(verbose=False), helpers.load_tokenizer()
    threads = threading.active_count()
    chat = ChatWidget(model, tokenizer)
    chat.input.value = "How many experts does Grok 2 have?"
    chat.send_button.click()  # exactly what a click in JupyterLab does
    chat.wait()
    assert chat.last_reply == " 8 experts per layer, and each token uses 2 of them."
    assert "tokens/s" in chat.stats.value and "first token after" in chat.stats.value
    assert "How many experts" in chat.transcript.value and chat.input.value == ""
    assert not chat.send_button.disabled and chat.stop_button.disabled
    chat.send("What is your name?")
    chat.wait()
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert threading.active_count() == threads


def test_playground_updates_plot_and_answer():
    model, tokenizer = helpers.load_model(verbose=False), helpers.load_tokenizer()
    playground = SamplingPlayground(model, tokenizer, [{"role": "user", "content": "What is your name?"}])
    playground.temperature.value = 0.0  # triggers update through the observer
    tokens, before, after, completion = playground.last
    assert after[0] == 1.0 and "tiny Grok 2" in completion.text
    assert bytes(playground.plot.value).startswith(b"\x89PNG")
