"""Grok 2's experts run grouped: an optional inference fast path that sits on the model, which knows nothing of it.

`modeling_grok2.Grok2SparseMoeBlock` runs its experts in a Python loop over the experts that received tokens. That is
the clearest way to write it, works with anything in place of an expert's `nn.Linear` (bitsandbytes' 4-bit layers,
LoRA adapters, offloaded weights) and trains. But finding which experts received tokens reads the routing back to
the CPU: at every layer the GPU waits, and a CUDA graph cannot record the step.

`enable(model)` turns on, in every MoE block that allows it, a second way with the same result:
- the experts' weights become slices of three [experts, out, in] tensors (one per projection), so names, state_dict
  and checkpoints stay as they were (`experts.3.w1.weight` is the slice [3] of the stack) and no memory is added;
- the token copies are sorted by expert and one grouped matmul per projection (`torch.nn.functional.grouped_mm`)
  runs every expert on its own rows. Shapes never depend on the routing, so nothing waits on the CPU.

    from helpers.grok2 import grouped_experts
    grouped_experts.enable(model)        # -> how many MoE blocks now run grouped
    grouped_experts.is_active(model)     # every MoE block runs grouped here (a single block can be asked too)
    grouped_experts.disable(model)       # each expert weight gets its own storage again

It is exact: on a CPU the grouped blocks give the loop's logits bit for bit, in fp32 and bf16 (same products, added
in the same order; tests/test_fast_generation.py). A block goes back to the loop by itself while training (gradients
must reach each expert's own parameter), when an expert's layer was swapped after stacking (quantization, LoRA), or
where `grouped_mm` has no kernel for the device and dtype. Moving or casting the model (`.to()`, `.half()`) unstacks
first, since those convert each parameter separately and would leave the stack behind.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modeling_grok2 import Grok2SparseMoeBlock

PROJECTIONS = ("w1", "w2", "w3")  # gate, down, up: the checkpoint's names


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Does `F.grouped_mm` have a kernel for experts of this dtype on this device?

    bf16 on CUDA GPUs of compute capability >= 8.0 (A100, H100; not a T4) and on CPUs; fp32 on CPUs too, but only run
    eagerly: torch.compile's shape checks for grouped_mm accept bf16 alone (`is_active(model, compiled=True)`)."""
    if getattr(F, "grouped_mm", None) is None:
        return False
    if device.type == "cuda":
        return dtype == torch.bfloat16 and torch.cuda.get_device_capability(device)[0] >= 8
    return device.type == "cpu" and dtype in (torch.bfloat16, torch.float32)


class GroupedSparseMoeBlock(Grok2SparseMoeBlock):
    """A `Grok2SparseMoeBlock` whose experts' weights are views of one stack per projection. `enable()` gives a block
    this class (and `disable()` takes it back), so the plain block keeps no trace of the fast path."""

    _stacked: dict[str, torch.Tensor]
    _grouped_kernel: bool  # decided once, when stacking: a compiled forward must not ask the device at every call

    def _experts_are_plain(self) -> bool:
        # Someone swapped a layer after stacking (quantization, LoRA): the stack no longer describes the experts.
        # (Types only: torch.compile guards on them, where reading data pointers would break the graph.)
        return all(type(getattr(expert, name)) is nn.Linear for expert in self.experts for name in PROJECTIONS)

    def _weights_are_views(self) -> bool:
        return all(getattr(expert, name).weight.data_ptr() == self._stacked[name][index].data_ptr()
                   for index, expert in enumerate(self.experts) for name in PROJECTIONS)

    def runs_grouped(self, x: torch.Tensor) -> bool:
        """Will this forward take the grouped path for input `x`? (Otherwise the loop of the plain block runs.)"""
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.experts.parameters()):
            return False  # training: gradients must reach each expert's own parameter, which the loop path does
        if not self._grouped_kernel or not self._experts_are_plain():
            return False
        if not torch.compiler.is_compiling() and not self._weights_are_views():
            return False  # a weight was replaced by a new tensor after stacking (eager only: cheap, not traceable)
        stack = self._stacked["w1"]
        if x.dtype != stack.dtype or x.device != stack.device:
            return False
        return stack.dtype == torch.bfloat16 or not torch.compiler.is_compiling()  # compiled grouped_mm: bf16 only

    def _experts_grouped(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        # Each token is copied once per chosen expert (tokens * top_k rows), rows sorted by expert. The sort is stable,
        # so each token's rows stay in expert order and the final sum adds them in the order the loop adds them.
        flat = chosen.reshape(-1)
        order = flat.argsort(stable=True)
        token_of_row = order // self.top_k
        rows_per_expert = torch.zeros(self.num_experts, dtype=torch.int32, device=x.device)
        rows_per_expert.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
        ends = rows_per_expert.cumsum(0, dtype=torch.int32)  # expert e owns rows ends[e-1] .. ends[e]-1
        rows = x[token_of_row]
        w1, w2, w3 = (self._stacked[name] for name in PROJECTIONS)
        # grouped_mm(a, b)[rows of e] = a[rows of e] @ b[e]; nn.Linear computes x @ W.T, hence the transposes (views).
        gate = F.grouped_mm(rows, w1.transpose(1, 2), offs=ends)
        up = F.grouped_mm(rows, w3.transpose(1, 2), offs=ends)
        expert_out = F.grouped_mm(F.gelu(gate) * up, w2.transpose(1, 2), offs=ends)
        out = torch.zeros_like(x, dtype=torch.float32)
        out.index_add_(0, token_of_row, expert_out.float() * weights.reshape(-1)[order, None])
        return out

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        if not self.runs_grouped(x):
            return super().forward(hidden_states)
        _, weights, chosen = self.route(x)
        return self._experts_grouped(x, weights, chosen).to(hidden_states.dtype).view(hidden_states.shape)

    def _apply(self, fn, recurse=True):
        # `.to()`, `.half()`, `.cuda()` convert each parameter separately, which would leave the stack behind holding
        # the old weights: go back to one storage per expert first (enable() again on the new device or dtype).
        _unstack(self)
        return self._apply(fn, recurse)  # the plain block's (this object's class changed in _unstack)


def moe_blocks(module: nn.Module) -> list[Grok2SparseMoeBlock]:
    """The Grok 2 MoE blocks in `module` (itself, if it is one)."""
    if isinstance(module, Grok2SparseMoeBlock):
        return [module]
    return [m for m in module.modules() if isinstance(m, Grok2SparseMoeBlock)]


def _stack(block: Grok2SparseMoeBlock) -> bool:
    """Move each projection's expert weights into one [experts, out, in] tensor; the experts keep views of it.

    Peak extra memory: one projection of one layer (each old matrix is freed as soon as it is copied). Returns False,
    changing nothing, where stacking cannot work: experts that are not plain `nn.Linear` (quantized, LoRA-wrapped),
    offloaded by accelerate, on several devices or dtypes, or still on `meta`."""
    if isinstance(block, GroupedSparseMoeBlock):
        return True
    linears = [getattr(expert, name) for expert in block.experts for name in PROJECTIONS]
    if any(type(linear) is not nn.Linear or hasattr(linear, "_hf_hook") for linear in linears):
        return False
    weights = [linear.weight for linear in linears]
    if len({(w.device, w.dtype) for w in weights}) != 1 or weights[0].is_meta:
        return False
    stacked = {}
    for name in PROJECTIONS:
        first = getattr(block.experts[0], name).weight
        stack = torch.empty((len(block.experts), *first.shape), dtype=first.dtype, device=first.device)
        for index, expert in enumerate(block.experts):
            linear = getattr(expert, name)
            stack[index].copy_(linear.weight.detach())
            linear.weight = nn.Parameter(stack[index], requires_grad=linear.weight.requires_grad)
        stacked[name] = stack
    block._stacked = stacked
    block._grouped_kernel = grouped_mm_supported(weights[0].device, weights[0].dtype)
    block.__class__ = GroupedSparseMoeBlock
    return True


def _unstack(block: Grok2SparseMoeBlock) -> None:
    if not isinstance(block, GroupedSparseMoeBlock):
        return
    for expert in block.experts:
        for name in PROJECTIONS:
            linear = getattr(expert, name)
            if type(linear) is nn.Linear:
                linear.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=linear.weight.requires_grad)
    del block._stacked, block._grouped_kernel
    block.__class__ = Grok2SparseMoeBlock


def enable(model: nn.Module) -> int:
    """Run the experts grouped in every MoE block of `model` that allows it (see the module docstring).

    For inference: no extra memory, same names, same results. Returns how many blocks now run grouped."""
    return sum(_stack(block) for block in moe_blocks(model))


def disable(model: nn.Module) -> None:
    """Give every expert weight its own storage again (before training, quantizing, or saving without shared views)."""
    for block in moe_blocks(model):
        _unstack(block)


def enabled_blocks(model: nn.Module) -> int:
    """How many MoE blocks of `model` have their experts stacked (whether or not the grouped kernel can run)."""
    return sum(isinstance(block, GroupedSparseMoeBlock) for block in moe_blocks(model))


def is_active(module: nn.Module, compiled: bool = False) -> bool:
    """Do the MoE blocks of `module` (a model, or one block) run grouped for inference in the dtype and device of their
    weights? False if there is no MoE block. `compiled=True` asks whether they still do inside `torch.compile`."""
    blocks = moe_blocks(module)
    if not blocks:
        return False
    for block in blocks:
        if not isinstance(block, GroupedSparseMoeBlock) or not block._grouped_kernel:
            return False
        if not block._experts_are_plain() or not block._weights_are_views():
            return False
        if compiled and block._stacked["w1"].dtype != torch.bfloat16:
            return False
    return True


__all__ = ["enable", "disable", "is_active", "enabled_blocks", "moe_blocks", "grouped_mm_supported",
           "GroupedSparseMoeBlock"]
