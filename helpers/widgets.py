"""Interactive pieces for the notebooks (ipywidgets): a chat that streams, and a sampling playground.

Both can be driven from code (`ChatWidget.send`, `SamplingPlayground.update`), which is how the lesson and the tests
exercise them without a person clicking.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as widgets

from .chat import SamplingSettings, next_token_distribution, stream


class ChatWidget:
    """A chat box that keeps the conversation, streams each reply, shows tokens/s and time to first token."""

    def __init__(self, model, tokenizer, settings: SamplingSettings = SamplingSettings(), system_prompt: str | None = None):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.messages: list[dict] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.transcript = widgets.HTML(value="")
        self.reply = widgets.HTML(value="")
        self.stats = widgets.Label(value="")
        self.input = widgets.Text(placeholder="Ask about Grok 2 or the course, then press Enter", layout=widgets.Layout(width="70%"))
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", disabled=True)
        self.send_button.on_click(lambda _: self.send(self.input.value))
        self.input.on_submit(lambda _: self.send(self.input.value))
        self.stop_button.on_click(lambda _: self.stop())
        self.box = widgets.VBox([self.transcript, self.reply, widgets.HBox([self.input, self.send_button, self.stop_button]), self.stats])
        self._stream = None
        self._thread: threading.Thread | None = None

    def _ipython_display_(self):
        from IPython.display import display

        display(self.box)

    def _render_transcript(self):
        rows = []
        for message in self.messages:
            who = {"user": "You", "assistant": "Grok", "system": "System"}[message["role"]]
            rows.append(f"<p><b>{who}:</b> {html.escape(message['content'])}</p>")
        self.transcript.value = "".join(rows)

    def send(self, text: str) -> None:
        """Add a user message and stream the reply in the background (call `wait()` to block until it is done)."""
        if not text.strip() or (self._thread and self._thread.is_alive()):
            return
        self.input.value = ""
        self.messages.append({"role": "user", "content": text})
        self._render_transcript()
        self._stream = stream(self.model, self.tokenizer, list(self.messages), self.settings)
        self.send_button.disabled, self.stop_button.disabled = True, False
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()

    def _consume(self):
        answer = ""
        try:
            for piece in self._stream:
                answer += piece
                self.reply.value = f"<p><b>Grok:</b> {html.escape(answer)}▌</p>"
            done = self._stream.completion
            self.messages.append({"role": "assistant", "content": done.text})
            ttft = f"{done.first_token_seconds * 1000:.0f} ms" if done.first_token_seconds is not None else "n/a"
            self.stats.value = (f"{done.completion_tokens} tokens in {done.seconds:.2f} s - {done.tokens_per_second:.1f} tokens/s, "
                                f"first token after {ttft}, finish: {done.finish_reason}")
        except Exception as error:  # shown in the widget instead of dying silently in a thread
            self.stats.value = f"error: {type(error).__name__}: {error}"
        finally:
            self.reply.value = ""
            self._render_transcript()
            self.send_button.disabled, self.stop_button.disabled = False, True

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()

    def wait(self, timeout: float = 300) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def last_reply(self) -> str | None:
        return self.messages[-1]["content"] if self.messages and self.messages[-1]["role"] == "assistant" else None


class SamplingPlayground:
    """Sliders for the sampling knobs, a sample answer, and the next-token distribution before/after the knobs."""

    def __init__(self, model, tokenizer, conversation, top: int = 10):
        import matplotlib.pyplot as plt

        self.model, self.tokenizer, self.conversation, self.top = model, tokenizer, conversation, top
        self.temperature = widgets.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05, description="temperature")
        self.top_p = widgets.FloatSlider(value=0.95, min=0.05, max=1.0, step=0.05, description="top_p")
        self.top_k = widgets.IntSlider(value=0, min=0, max=50, description="top_k (0=off)")
        self.penalty = widgets.FloatSlider(value=1.0, min=1.0, max=2.0, step=0.05, description="rep. penalty")
        self.max_new_tokens = widgets.IntSlider(value=32, min=1, max=128, description="max tokens")
        self.seed = widgets.IntText(value=0, description="seed")
        self.answer = widgets.HTML()
        self.plot = widgets.Image(format="png")  # a PNG: renders the same in JupyterLab, Colab and tests
        self._plt = plt
        for control in (self.temperature, self.top_p, self.top_k, self.penalty, self.max_new_tokens, self.seed):
            control.observe(lambda _: self.update(), names="value")
        controls = widgets.VBox([self.temperature, self.top_p, self.top_k, self.penalty, self.max_new_tokens, self.seed])
        self.box = widgets.VBox([widgets.HBox([controls, self.plot]), self.answer])
        self.last = None

    def settings(self) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=self.max_new_tokens.value, temperature=self.temperature.value,
                                top_p=self.top_p.value, top_k=self.top_k.value,
                                repetition_penalty=self.penalty.value, seed=self.seed.value)

    def update(self):
        from .chat import generate

        settings = self.settings()
        tokens, before, after = next_token_distribution(self.model, self.tokenizer, self.conversation, settings, self.top)
        completion = generate(self.model, self.tokenizer, self.conversation, settings)
        self.answer.value = f"<p><b>sample:</b> {html.escape(completion.text)} <i>({completion.finish_reason})</i></p>"
        import io

        figure, axis = self._plt.subplots(figsize=(6, 3))
        positions = range(len(tokens))
        axis.bar([p - 0.2 for p in positions], before, width=0.4, label="model")
        axis.bar([p + 0.2 for p in positions], after, width=0.4, label="after the knobs")
        axis.set_xticks(list(positions), [repr(t) for t in tokens], rotation=60, fontsize=8)
        axis.set_ylabel("probability")
        axis.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        self._plt.close(figure)
        self.plot.value = buffer.getvalue()
        self.last = (tokens, before, after, completion)
        return self.last

    def _ipython_display_(self):
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.box)
