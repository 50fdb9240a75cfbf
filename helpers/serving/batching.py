"""The KV cache as a fixed number of slots, and one decoding step that runs every slot at once.

Each request being generated owns a slot: one row of every layer's key and value buffers, shaped
[slots, kv_heads, max_len + 1, head_dim]. Token p of its sequence lives at index p of its row; the last index is
scratch, where idle rows write. A new request is prefilled alone (its whole prompt in one forward pass, exactly as
`model.generate` does it) and its keys and values are copied into its slot. From then on one `step()` gives every
slot its next-token logits in one forward pass of shape [slots, 1].

Why every slot, every time, and why padded matrix products. A matrix product rounds differently depending on how
many rows it multiplies: on this course's CPU, row i of `x @ W.T` computed with 1 row, with 2-3 rows and with 4 or
more rows differ in the last bits. A greedy answer could then depend on who else is being served - a near-tie between
two tokens flips, and the answer changes. So the step keeps one shape whatever runs: all slots are computed (idle
ones on a dummy token), attention always spans the whole slot (masked), and while the step runs, every matrix product
whose row count depends on the routing (the experts of a mixture-of-experts layer, and a LoRA adapter on them) is
padded with zero rows to the slot count (`pad_every_linear`: hooks on the model's `nn.Linear` layers; a
transformers MoE model is switched to `per_expert_loop`, which pads its own). Each row's arithmetic is then the same
alone or beside fifteen others; only its position among the rows changes, which a fixed-shape product does not
see (tests/test_serve_batching.py checks it bit for bit). It costs work when few slots are busy: the price of answers
that do not depend on the traffic. vLLM and SGLang reach the same goal on GPUs with batch-invariant kernels
(`VLLM_BATCH_INVARIANT=1`, SGLang's `--enable-deterministic-inference`).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer

from ..errors import CourseError

_step = threading.local()  # `.rows` is the slot count while a decoding step runs in this thread


def _pad(x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """`x` flattened to [rows, features] with zero rows below, or None when it needs no padding."""
    rows = getattr(_step, "rows", 0)
    count = x.numel() // x.shape[-1] if x.dim() and x.shape[-1] else 0
    if not 0 < count < rows:
        return None
    return F.pad(x.reshape(count, x.shape[-1]), (0, 0, 0, rows - count)), count


def fixed_rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, computed on the step's row count during a decoding step (for code that calls F.linear itself)."""
    padded = _pad(x)
    if padded is None:
        return F.linear(x, weight, bias)
    out = F.linear(padded[0], weight, bias)[: padded[1]]
    return out.reshape(*x.shape[:-1], out.shape[-1])


def pad_every_linear(model) -> None:
    """Hooks on every `nn.Linear` of `model` (once): during a decoding step of this thread, an input of fewer rows
    than slots is padded with zero rows, and the real rows of the output are returned. Outside a step they do
    nothing."""
    if getattr(model, "_course_fixed_rows", False):
        return
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(_before_linear)
            module.register_forward_hook(_after_linear)
    model._course_fixed_rows = True


def _before_linear(module, args):
    if not getattr(_step, "rows", 0):
        return None
    padded = _pad(args[0])
    _step.pending.append(None if padded is None else (padded[1], args[0].shape[:-1]))
    return None if padded is None else (padded[0], *args[1:])


def _after_linear(module, args, output):
    if not getattr(_step, "rows", 0):
        return None
    padding = _step.pending.pop()
    if padding is None:
        return None
    count, shape = padding
    return output[:count].reshape(*shape, output.shape[-1])


@contextlib.contextmanager
def decoding_step(rows: int):
    """Within it (in this thread), matrix products run on `rows` rows: see pad_every_linear, fixed_rows_linear."""
    _step.rows, _step.pending = rows, []
    try:
        yield
    finally:
        _step.rows = 0


class _SlotLayer(CacheLayerMixin):
    """One layer's keys and values for every slot. `update` writes each row's new key at its own position."""

    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values, self.is_initialized = keys, values, True
        self.rows = torch.arange(keys.shape[0], device=keys.device)
        self.write_at: torch.Tensor | None = None  # [slots]: the index each row writes its new key and value to

    def lazy_initialization(self, key_states, value_states) -> None:  # allocated up front
        return None

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys[self.rows, :, self.write_at] = key_states[:, :, -1]
        self.values[self.rows, :, self.write_at] = value_states[:, :, -1]
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[2], 0

    def get_seq_length(self) -> int:
        # Positions differ per row: the step passes them (position_ids) and the mask explicitly. 0 makes a model's
        # own "past length" bookkeeping harmless (Grok 2 also lets each query see slot 0, which every row has).
        return 0

    def get_max_length(self) -> int:
        return self.keys.shape[2]


PER_EXPERT_LOOP = "course_per_expert_loop"


def per_expert_loop(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
    """The experts of a transformers mixture-of-experts layer, one expert at a time, for serving.

    What transformers' "eager" experts do, with every product padded to the step's rows (`fixed_rows_linear`: their
    fused kernels, grouped_mm, cannot be) and the weighted outputs added up in float32, as their batched_mm does,
    whatever the model's dtype."""
    out = torch.zeros(hidden_states.shape, dtype=torch.float32, device=hidden_states.device)
    for expert in torch.unique(top_k_index).tolist():
        if expert >= self.num_experts:  # an expert-parallel placeholder: another device's expert
            continue
        tokens, choice = torch.where(top_k_index == expert)
        layers = [("gate_up_proj" if self.has_gate else "up_proj"), "down_proj"]
        h = hidden_states[tokens]
        for index, name in enumerate(layers):
            weight = getattr(self, name)[expert]
            bias = getattr(self, f"{name}_bias")[expert] if self.has_bias else None
            h = fixed_rows_linear(h, weight.T if self.is_transposed else weight, bias)
            if index == 0:
                h = self._apply_gate(h) if self.has_gate else self.act_fn(h)
        if self.has_post_expert_norm:
            h = self.post_expert_norm(h)
        out.index_add_(0, tokens, h.float() * top_k_weights[tokens, choice, None].float())
    return out.to(hidden_states.dtype)


def register_per_expert_loop() -> str:
    """Make `per_expert_loop` one of transformers' expert implementations; returns its name."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(PER_EXPERT_LOOP, per_expert_loop)
    return PER_EXPERT_LOOP


@dataclass
class Row:
    """What one busy slot contributes to a step."""

    slot: int
    token: int  # the last token, whose key and value are written now
    position: int  # its position in the sequence
    use_adapter: bool = False


def _forward_accepts(model, name: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


class KVSlots:
    """`slots` sequences of at most `max_len` tokens each, decoded together."""

    def __init__(self, model, slots: int, max_len: int, with_adapter: bool = False):
        self.model, self.slots, self.max_len = model, slots, max_len
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if getattr(base.config, "_experts_implementation", None) is not None and hasattr(
                base, "set_experts_implementation"):
            base.set_experts_implementation(register_per_expert_loop())
        pad_every_linear(model)
        self.with_adapter = with_adapter  # an unmerged PEFT adapter: each request asks for it or for the base
        self._layers: list[_SlotLayer] | None = None
        self._keep_last = {"logits_to_keep": 1} if _forward_accepts(model, "logits_to_keep") else {}

    @property
    def bytes(self) -> int:
        if self._layers is None:
            return 0
        return sum(t.numel() * t.element_size() for layer in self._layers for t in (layer.keys, layer.values))

    def _weights(self, use_adapter: bool):
        """The adapter on (as loaded) or off (PEFT's `disable_adapter`: the base model's answer, the same weights)."""
        if self.with_adapter and not use_adapter:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def _allocate(self, prefilled: DynamicCache) -> None:
        layers = []
        for layer in prefilled.layers:
            if type(layer) is not DynamicLayer:
                raise CourseError(f"This model's KV cache has {type(layer).__name__} layers; the course server's "
                                  "slots hold full-attention caches only.",
                                  "Serve it with vLLM or SGLang (lesson 06), or with helpers.chat one request at a "
                                  "time.")
            _, heads, _, dim = layer.keys.shape
            shape = (self.slots, heads, self.max_len + 1, dim)
            keys = torch.zeros(shape, dtype=layer.keys.dtype, device=layer.keys.device)
            layers.append(_SlotLayer(keys, torch.zeros_like(keys)))
        self._layers = layers
        self._cache = Cache(layers=layers)

    @torch.no_grad()
    def prefill(self, slot: int, ids: list[int], use_adapter: bool = False) -> torch.Tensor:
        """Run the prompt `ids` alone, keep its keys and values in `slot`; returns the next-token logits (fp32)."""
        if not 0 < len(ids) <= self.max_len:
            raise ValueError(f"a prompt of {len(ids)} tokens does not fit a slot of {self.max_len}")
        device = self.model.device
        prefilled = DynamicCache(config=self.model.config)
        with self._weights(use_adapter):
            out = self.model(input_ids=torch.tensor([ids], device=device), past_key_values=prefilled, use_cache=True,
                             **self._keep_last)
        if self._layers is None:
            self._allocate(prefilled)
        for layer, source in zip(self._layers, prefilled.layers):
            layer.keys[slot, :, : len(ids)] = source.keys[0]
            layer.values[slot, :, : len(ids)] = source.values[0]
        return out.logits[0, -1].float()

    @torch.no_grad()
    def step(self, rows: list[Row]) -> torch.Tensor:
        """One decoding step of every slot: logits [slots, vocab] (fp32); rows of idle slots are meaningless.

        With an unmerged adapter, requests for the adapter and for the base run as two passes of the same shape (a
        LoRA layer inside the experts sees tokens, not requests, so one pass cannot mix them)."""
        if self._layers is None:
            raise RuntimeError("step() before any prefill")
        logits = None
        for use_adapter in (False, True):
            group = [row for row in rows if row.use_adapter == use_adapter]
            if not group:
                continue
            with self._weights(use_adapter):
                out = self._step(group)
            if logits is None:
                logits = out
            else:
                chosen = torch.tensor([row.slot for row in group], device=out.device)
                logits[chosen] = out[chosen]
        return logits

    def _step(self, rows: list[Row]) -> torch.Tensor:
        device = self.model.device
        tokens = torch.zeros(self.slots, dtype=torch.long)
        positions = torch.zeros(self.slots, dtype=torch.long)
        busy = torch.zeros(self.slots, dtype=torch.bool)
        for row in rows:
            tokens[row.slot], positions[row.slot], busy[row.slot] = row.token, row.position, True
        scratch = self.max_len
        write_at = torch.where(busy, positions, torch.full_like(positions, scratch)).to(device)
        for layer in self._layers:
            layer.write_at = write_at
        keys = torch.arange(self.max_len + 1)
        allowed = (keys[None, :] <= positions[:, None]) & busy[:, None]  # a row sees its own tokens, up to this one
        allowed[:, scratch] = ~busy  # an idle row sees only the scratch index (its softmax must not be empty)
        dtype = self._layers[0].keys.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        with decoding_step(self.slots):
            out = self.model(input_ids=tokens[:, None].to(device), position_ids=positions[:, None].to(device),
                             attention_mask=mask[:, None, None, :].to(device), past_key_values=self._cache,
                             use_cache=True)
        return out.logits[:, -1].float()
