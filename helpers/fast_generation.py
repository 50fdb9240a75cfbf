"""Fast decoding: a pre-allocated KV cache and one decode step replayed as a CUDA graph (or compiled).

At batch 1 a GPU decodes a token by reading every active weight once. The time that takes (bytes / memory bandwidth)
is the floor, the *roofline*. Stock `model.generate` stays far above it, for reasons that have nothing to do with the
arithmetic:
- a growing ("dynamic") KV cache is re-allocated as it grows, and every step ends with Python deciding whether to stop;
- each layer launches dozens of small kernels from Python; at ~5 us per launch, a 22-layer model spends longer
  launching kernels than the GPU spends reading its 2 GB of weights;
- Grok 2's experts are chosen per token: finding them reads the routing back to the CPU, and the GPU idles meanwhile.

This module removes all three: a static cache (fixed addresses, filled in place), a decode step with no CPU round trip
(Grok 2 runs its experts grouped, `helpers.grok2.grouped_experts`), and that step recorded once and replayed:

    with FastGenerator(model) as fast:                # "auto": compiled + CUDA graphs on a GPU, plain eager on a CPU
        out = fast.generate(input_ids, max_new_tokens=128)
    out.sequences                                     # the same tokens `model.generate(..., do_sample=False)` gives
    out.decode_tokens_per_s                           # (leaving the `with` frees the cache, restores the model)

Modes: "eager" (the static cache alone), "cuda-graph" (the eager step captured with `torch.cuda.CUDAGraph`: no launch
overhead, seconds to prepare), "compile" (`torch.compile`: fused kernels, and CUDA graphs on a GPU; tens of seconds
to prepare, once per batch size and cache length). Works for any transformers causal LM that supports a static cache,
Grok 2 included; benchmarks/decode_speed.py measures each mode against the roofline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import StaticCache

from .errors import CourseError
from .grok2 import grouped_experts

MODES = ("auto", "eager", "cuda-graph", "compile")


@dataclass
class FastGeneration:
    sequences: torch.Tensor  # [batch, prompt + new tokens], left padding kept, like generate()
    new_tokens: int  # tokens per row (rows that finished early are filled with the pad token, as generate() does)
    prefill_seconds: float  # the prompt's forward pass, which also gives the first new token
    decode_steps: int  # forward passes after the prompt's (one more per new token; a few more when stopping early)
    decode_seconds: float
    mode: str
    logits: torch.Tensor | None = None  # [batch, new tokens, vocab] fp32, with output_logits=True (for checking)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens made per second after the first, all rows together (each step makes one token per row)."""
        if self.decode_steps == 0 or self.decode_seconds <= 0:
            return 0.0
        return self.sequences.shape[0] * self.decode_steps / self.decode_seconds


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _DecodeSession:
    """Everything one (batch, cache length) needs, allocated once so that a recorded step can be replayed."""

    cache: StaticCache
    tokens: torch.Tensor  # [batch, 1]: the step's input, filled in place
    positions: torch.Tensor  # [batch, 1]
    mask: torch.Tensor  # [batch, cache length]: 1 for every slot that is not padding
    step: object = None  # () -> logits [batch, vocab]
    notes: list[str] = field(default_factory=list)


class FastGenerator:
    """Greedy or sampled generation through a static KV cache and a recorded decode step. See the module docstring."""

    def __init__(self, model, mode: str = "auto", cache_bucket: int = 256, tune: bool = False):
        if mode not in MODES:
            raise CourseError(f"Unknown decoding mode {mode!r}.", f"use one of {', '.join(MODES)}")
        self.model = model.eval()
        self.device = _model_device(model)
        if mode == "auto":
            mode = "compile" if self.device.type == "cuda" else "eager"
        if mode == "cuda-graph" and self.device.type != "cuda":
            raise CourseError("mode='cuda-graph' needs a CUDA GPU.", "use mode='eager' or 'compile' on a CPU")
        self.mode = mode
        self.cache_bucket = cache_bucket  # cache lengths are rounded up to this: fewer recordings across calls
        # tune (mode "compile"): let the compiler time variants of each generated GPU kernel and keep the fastest
        # (inductor's coordinate-descent tuning, as PyTorch's gpt-fast does). Slower to prepare; the kernels that
        # read the weights at batch 1 are where it pays.
        self.tune = tune
        self.notes: list[str] = []
        self._session: _DecodeSession | None = None
        self._session_key: tuple | None = None
        self._compiled_forward = None
        # Grok 2: run its experts grouped (no CPU round trip), unless their owner already did; close() undoes it.
        moe_layers = len(grouped_experts.moe_blocks(model))
        self._grouped_here = moe_layers > 0 and grouped_experts.enabled_blocks(model) == 0
        if moe_layers:
            grouped = grouped_experts.enable(model)
            if grouped < moe_layers:
                self.notes.append(f"experts run one by one in {moe_layers - grouped} layers "
                                  "(quantized, adapted or offloaded experts cannot be grouped)")
        if self.mode in ("compile", "cuda-graph") and len({p.device for p in model.parameters()}) > 1:
            self.notes.append(f"mode {self.mode!r} needs the whole model on one device: decoding eagerly instead")
            self.mode = "eager"
        if self.mode in ("compile", "cuda-graph") and not self._step_is_capturable():
            self.notes.append(f"mode {self.mode!r} needs the grouped experts path, which {self._dtype} on "
                              f"{self.device.type} lacks: decoding eagerly instead")
            self.mode = "eager"

    def close(self) -> None:
        """Free the KV cache and compiled step, and give Grok 2's experts back their own storage if this generator
        grouped them: the model is then exactly as it was handed over."""
        self._session = self._session_key = self._compiled_forward = None
        if self._grouped_here:
            grouped_experts.disable(self.model)
            self._grouped_here = False
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self) -> "FastGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _step_is_capturable(self) -> bool:
        """A graph (compiled or recorded) cannot contain a CPU round trip: Grok 2's experts must run grouped."""
        if not grouped_experts.moe_blocks(self.model):
            return True
        return grouped_experts.is_active(self.model, compiled=self.mode == "compile")

    # ---------------------------------------------------------------------------------------------- the step

    def _forward(self, tokens, positions, mask, cache):
        out = self.model(input_ids=tokens, position_ids=positions, attention_mask=mask, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def _new_session(self, batch: int, cache_len: int) -> _DecodeSession:
        config = self.model.config
        cache = StaticCache(config=config, max_cache_len=cache_len)
        session = _DecodeSession(
            cache=cache,
            tokens=torch.zeros(batch, 1, dtype=torch.long, device=self.device),
            positions=torch.zeros(batch, 1, dtype=torch.long, device=self.device),
            mask=torch.ones(batch, cache_len, dtype=torch.long, device=self.device),
        )

        def eager_step():
            return self._forward(session.tokens, session.positions, session.mask, session.cache)

        if self.mode == "eager":
            session.step = eager_step
        elif self.mode == "compile":
            if self._compiled_forward is None:
                # Fused kernels would keep bf16 intermediates in fp32: more precise, but no longer the same numbers
                # as the plain model (measured on a random bf16 Grok 2: logits 6% apart, a token flipped after 17).
                # Rounding where eager rounds keeps the fast path exact to bf16 precision, and costs nothing that
                # matters when decoding is limited by memory. On a GPU, CUDA graphs ("reduce-overhead") replay it.
                options = {"emulate_precision_casts": True}
                if self.device.type == "cuda":
                    options["triton.cudagraphs"] = True
                if self.tune:
                    options["coordinate_descent_tuning"] = True
                self._compiled_forward = torch.compile(self._forward, fullgraph=True, dynamic=False, options=options)
            compiled = self._compiled_forward

            def compiled_step():
                if self.device.type == "cuda":
                    torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten
                return compiled(session.tokens, session.positions, session.mask, session.cache)

            # Compile (and record the CUDA graphs) now, on scratch cache contents that generate() resets, so that
            # generate()'s timings never include compilation - and a model that cannot compile falls back here.
            try:
                self._fill_cache_with_scratch(session)
                with torch.no_grad():
                    for _ in range(3):  # CUDA graph trees record on the second or third call
                        compiled_step()
                session.step = compiled_step
            except Exception as error:  # noqa: BLE001 - any compiler failure: say why, decode eagerly
                self.notes.append(f"torch.compile failed ({type(error).__name__}: {str(error)[:300]}); "
                                  "decoding eagerly")
                self.mode = "eager"
                self._compiled_forward = None
                session.step = eager_step
        else:  # cuda-graph
            session.step = self._record(session, eager_step)
        return session

    def _record(self, session: _DecodeSession, eager_step):
        """Capture one decode step as a CUDA graph. Capturing runs the step, so it runs on scratch cache contents
        that the next generate() resets: the graph keeps the addresses, not the values."""
        self._fill_cache_with_scratch(session)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up outside the graph: cuBLAS picks its kernels, workspaces appear
            for _ in range(3):
                eager_step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                logits = eager_step()
        except RuntimeError as error:  # something in the step waits for the CPU: it cannot be recorded
            self.notes.append(f"could not record the decode step as a CUDA graph ({error}); decoding eagerly")
            self.mode = "eager"
            return eager_step

        def replay():
            graph.replay()
            return logits

        session.notes.append("decode step recorded as a CUDA graph")
        return replay

    def _fill_cache_with_scratch(self, session: _DecodeSession) -> None:
        # The static cache allocates its tensors on first use; a recorded step must see them already allocated.
        with torch.no_grad():
            prompt = torch.zeros(session.tokens.shape[0], 1, dtype=torch.long, device=self.device)
            self._forward(prompt, session.positions, session.mask, session.cache)

    def _session_for(self, batch: int, needed: int) -> _DecodeSession:
        cache_len = -(-needed // self.cache_bucket) * self.cache_bucket
        key = (batch, cache_len)
        if self._session_key != key:
            self._session = None  # free the previous cache first: it can be gigabytes
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._session = self._new_session(batch, cache_len)
            self._session_key = key
        return self._session

    # ------------------------------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        *,
        eos_token_id: int | list[int] | None = "model",
        pad_token_id: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop_check_every: int = 8,
        output_logits: bool = False,
    ) -> FastGeneration:
        """Like `model.generate(input_ids, attention_mask=..., max_new_tokens=...)`: left-padded batches, greedy or
        sampled, stops when every row has produced an end token. `eos_token_id="model"` takes the model's
        generation config; None never stops early. Whether all rows have finished is read back every
        `stop_check_every` steps only (each read makes the CPU wait for the GPU); the extra steps are cut off.
        `output_logits=True` keeps every step's logits (a copy per step: for checking, not for timing)."""
        if max_new_tokens < 1:
            raise CourseError("max_new_tokens must be at least 1.", "ask for one or more new tokens")
        if input_ids.dim() != 2:
            raise CourseError(f"input_ids must be [batch, tokens]; got shape {tuple(input_ids.shape)}.",
                              "add a batch dimension: input_ids[None]")
        generation_config = getattr(self.model, "generation_config", None)
        if eos_token_id == "model":
            eos_token_id = getattr(generation_config, "eos_token_id", None)
        eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        if pad_token_id is None:
            pad_token_id = getattr(generation_config, "pad_token_id", None)
            pad_token_id = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
        batch, prompt_len = input_ids.shape
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device).long()
        session = self._session_for(batch, prompt_len + max_new_tokens)

        # Reset in place (the recorded step holds these addresses): cache, slot mask, positions.
        session.cache.reset()
        session.mask.fill_(1)
        session.mask[:, :prompt_len] = attention_mask
        # Left padding: the first real token is position 0, whatever slot it sits in (as generate() counts).
        prompt_positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = torch.full((batch, prompt_len + max_new_tokens), pad_token_id, dtype=torch.long, device=self.device)
        out[:, :prompt_len] = input_ids
        eos_ids = torch.tensor(eos, dtype=torch.long, device=self.device) if eos else None
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        generator = None
        if do_sample:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed if seed is not None else torch.seed())

        kept_logits = []

        def choose(logits: torch.Tensor) -> torch.Tensor:
            logits = logits.float()
            if output_logits:
                kept_logits.append(logits.clone())
            if not do_sample:
                return logits.argmax(-1)
            return sample(logits, temperature, top_k, top_p, generator)

        _synchronize(self.device)
        start = time.perf_counter()
        logits = self._forward(input_ids, prompt_positions, session.mask, session.cache)
        next_tokens = choose(logits)
        _synchronize(self.device)
        prefill_seconds = time.perf_counter() - start

        session.positions.copy_(prompt_positions[:, -1:])
        steps = 0
        start = time.perf_counter()
        while True:
            next_tokens = torch.where(done, pad_token_id, next_tokens)
            out[:, prompt_len + steps] = next_tokens
            steps += 1
            if eos_ids is not None:
                done |= torch.isin(next_tokens, eos_ids)
            if steps == max_new_tokens:
                break
            if eos_ids is not None and steps % stop_check_every == 0 and bool(done.all()):
                break
            session.tokens.copy_(next_tokens[:, None])
            session.positions.add_(1)
            next_tokens = choose(session.step())
        _synchronize(self.device)
        decode_seconds = time.perf_counter() - start

        decode_steps = steps - 1
        if eos_ids is not None:
            # generate() stops right after the step at which the last row finished: drop the steps after it.
            ended = torch.isin(out[:, prompt_len:prompt_len + steps], eos_ids)
            last_needed = torch.where(ended.any(-1), ended.int().argmax(-1), steps - 1)
            steps = int(last_needed.max()) + 1
        logits = torch.stack(kept_logits[:steps], dim=1) if output_logits else None
        return FastGeneration(out[:, :prompt_len + steps], steps, prefill_seconds, decode_steps, decode_seconds,
                              self.mode, logits)


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
           generator: torch.Generator | None) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus), then one draw per row; all on the device, no CPU round trip."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p; the most likely token always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


__all__ = ["FastGenerator", "FastGeneration", "MODES", "sample"]
