"""The lessons' exercises, checked: one function per exercise, shared by the lessons and their solution notebooks.

Every lesson ends with three exercises (starter, practitioner, expert). The learner's answer goes into a variable or
a function; the check cell below it calls the matching function here:

    exercises.check_00_starter(a100_fp8_32k)

* The answer is still `None` (as committed): it prints "⏳ ... not attempted yet" with a hint, and does not fail.
* A right answer: it prints "✅ ..." and returns a `Result` whose `.passed` is true.
* A wrong answer: it raises `ExerciseFailed` (an `AssertionError`) whose message starts with "❌" and says what is
  wrong, without giving the answer away.
* An exercise this machine or profile cannot run (no bitsandbytes kernel, a model without Grok 2's router): it prints
  "⏭ ... skipped" and says why.

The solution notebooks (`notebooks/solutions/NN_*_solutions.ipynb`) fill in every answer and run the same functions,
so CI proves that each exercise can be solved; `tests/test_exercises.py` proves that each check rejects wrong answers.
Expected values are computed here from `helpers` (the planner, the configs, the model), never typed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

PASSED, NOT_ATTEMPTED, SKIPPED = "passed", "not attempted", "skipped"


class ExerciseFailed(AssertionError):
    """A wrong answer. The message starts with ❌ and says what is wrong."""


@dataclass(frozen=True)
class Result:
    exercise: str
    status: str  # "passed", "not attempted" or "skipped"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def ok(self) -> bool:
        """Passed, or skipped because this machine cannot run it (what a solution notebook requires)."""
        return self.status in (PASSED, SKIPPED)

    def _ipython_display_(self) -> None:
        """Shown as the last line of a cell: nothing more, the check has already printed its line."""

    def __str__(self) -> str:
        mark = {PASSED: "✅", NOT_ATTEMPTED: "⏳", SKIPPED: "⏭"}[self.status]
        return f"{mark} {self.exercise}: {self.message}"


def _report(exercise: str, status: str, message: str) -> Result:
    result = Result(exercise, status, message)
    print(result)
    return result


def _passed(exercise: str, message: str) -> Result:
    return _report(exercise, PASSED, message)


def _not_attempted(exercise: str, hint: str) -> Result:
    return _report(exercise, NOT_ATTEMPTED, f"not attempted yet. {hint}")


def _skipped(exercise: str, why: str) -> Result:
    return _report(exercise, SKIPPED, f"skipped: {why}")


def _fail(exercise: str, what: str) -> None:
    raise ExerciseFailed(f"❌ {exercise}: {what}")


def _number(exercise: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        _fail(exercise, f"`{name}` should be a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        _fail(exercise, f"`{name}` is {value}; expected a finite number.")
    return value


def _whole(exercise: str, name: str, value) -> int:
    number = _number(exercise, name, value)
    if number != int(number):
        _fail(exercise, f"`{name}` = {value} is not a whole number (a count of GPUs/parameters/requests is).")
    return int(number)


def _grok():
    from .profiles import plan_profile

    return plan_profile("grok-2")


def _grok_config():
    from .loading import load_config

    return load_config("xai-org/grok-2")


GB = 1e9


# ------------------------------------------------------------------------------------------------ lesson 00


def check_00_starter(a100_fp8_32k) -> Result:
    """A100 40 GB GPUs that hold Grok 2.5 in FP8 plus the KV cache of one 32K-token context."""
    ex = "00 starter"
    if a100_fp8_32k is None:
        return _not_attempted(ex, "Set `a100_fp8_32k` with `grok.gpus_needed(...)`: 40 GB cards, FP8, 32768 tokens.")
    answer = _whole(ex, "a100_fp8_32k", a100_fp8_32k)
    grok = _grok()
    expected = grok.gpus_needed(40 * GB, "fp8", context_tokens=32768)
    if answer == expected:
        return _passed(ex, f"{answer} GPUs of 40 GB: {grok.weight_bytes('fp8') / GB:.0f} GB of FP8 weights plus "
                           f"{grok.kv_cache_bytes(32768) / GB:.1f} GB of KV cache, 90% of each card usable.")
    if answer == grok.gpus_needed(40 * GB, "bf16", context_tokens=32768):
        _fail(ex, "that is the bf16 count; the question asks for FP8 weights (precision 'fp8').")
    if answer == grok.gpus_needed(40 * 1024**3, "fp8", context_tokens=32768):
        _fail(ex, "close: the course counts 40 GB as 40 x 10^9 bytes (`40 * GB` with GB from helpers.memory).")
    _fail(ex, f"{answer} is too {'many' if answer > expected else 'few'} GPUs. Pass the card's bytes (40 * GB), "
              "the precision 'fp8' and context_tokens=32768 to grok.gpus_needed.")


def check_00_practitioner(batch_equal_to_weights) -> Result:
    """The largest batch of 8K-token requests whose bf16 KV cache does not exceed Grok 2.5's FP8 weights."""
    ex = "00 practitioner"
    if batch_equal_to_weights is None:
        return _not_attempted(ex, "Set `batch_equal_to_weights` from grok.weight_bytes('fp8') and "
                                  "grok.kv_cache_bytes(8192).")
    batch = _whole(ex, "batch_equal_to_weights", batch_equal_to_weights)
    grok = _grok()
    weights, per_request = grok.weight_bytes("fp8"), grok.kv_cache_bytes(8192)
    if batch < 1:
        _fail(ex, f"a batch of {batch} requests? The answer is at least 1.")
    if grok.kv_cache_bytes(8192, batch=batch) > weights:
        _fail(ex, f"at batch {batch} the KV cache ({grok.kv_cache_bytes(8192, batch=batch) / GB:.0f} GB) is already "
                  f"larger than the FP8 weights ({weights / GB:.0f} GB): round down, not up.")
    if grok.kv_cache_bytes(8192, batch=batch + 1) <= weights:
        _fail(ex, f"batch {batch + 1} still fits under the weights: you want the largest such batch "
                  "(did you use the bf16 KV cache, 2 bytes per value, and 8192 tokens?).")
    return _passed(ex, f"{batch} requests of 8K tokens: {batch} x {per_request / GB:.2f} GB of KV cache "
                       f"<= {weights / GB:.0f} GB of FP8 weights. At serving scale the cache, not the weights, "
                       "decides how many GPUs you need.")


def check_00_expert(one_expert) -> Result:
    """Parameters of one expert in one layer, derived from total/active parameters and the expert counts."""
    ex = "00 expert"
    if one_expert is None:
        return _not_attempted(ex, "Set `one_expert` using only grok.total_params, grok.active_params, "
                                  "grok.num_experts and grok.experts_per_token (and the 64 layers).")
    answer = _whole(ex, "one_expert", one_expert)
    config = _grok_config()
    expected = 3 * config.hidden_size * config.moe_intermediate_size
    if answer == expected:
        return _passed(ex, f"{answer:,} parameters = 3 matrices x {config.hidden_size} x "
                           f"{config.moe_intermediate_size} (w1, w3 up/gate and w2 down of a GeGLU expert).")
    if answer == expected * config.num_local_experts or answer == expected * config.num_hidden_layers:
        _fail(ex, "that is several experts: divide by the number of experts *and* the number of layers.")
    if answer == expected * (config.num_local_experts - config.num_experts_per_tok) // config.num_local_experts:
        _fail(ex, "close: total - active is only the 6 experts a token skips; scale it to all 8 first.")
    _fail(ex, f"{answer:,} is not the size of one expert. Hint: total - active = the parameters of the experts a "
              "token does *not* use, (8 - 2) of every 8.")


# ------------------------------------------------------------------------------------------------ lesson 01


def check_01_starter(hours_at_250) -> Result:
    """Hours to download Grok 2.5's bf16 weights on a 250 Mb/s link."""
    ex = "01 starter"
    if hours_at_250 is None:
        return _not_attempted(ex, "Set `hours_at_250` with download.download_seconds(grok_bytes, ...) / 3600.")
    hours = _number(ex, "hours_at_250", hours_at_250)
    grok_bytes = _grok().weight_bytes("bf16")
    expected = grok_bytes * 8 / 250e6 / 3600
    if math.isclose(hours, expected, rel_tol=1e-6):
        return _passed(ex, f"{hours:.2f} hours for {grok_bytes / GB:.0f} GB at 250 Mb/s (a link is quoted in bits "
                           "per second: 8 bits a byte).")
    if math.isclose(hours, expected / 8, rel_tol=1e-3):
        _fail(ex, "8 times too short: links are quoted in *bits* per second, files in bytes.")
    if math.isclose(hours, expected * 3600, rel_tol=1e-3):
        _fail(ex, "that is in seconds; the question asks for hours.")
    if math.isclose(hours, expected * 60, rel_tol=1e-3):
        _fail(ex, "that is in minutes; the question asks for hours.")
    _fail(ex, f"{hours:.3g} hours is not it. download_seconds takes bytes and bits per second (250 Mb/s = 250e6).")


def check_01_practitioner(selected, manifest) -> Result:
    """Which LFS files `git lfs pull --include "*.safetensors" --exclude <largest shard>` fetches."""
    ex = "01 practitioner"
    if selected is None:
        return _not_attempted(ex, "Set `selected` with download.select(manifest, include=[...], exclude=[...]).")
    if isinstance(selected, (str, bytes)) or not hasattr(selected, "__iter__"):
        _fail(ex, f"`selected` should be a list of paths, got {type(selected).__name__}.")
    chosen = set(selected)
    shards = sorted((p for p in manifest if p.endswith(".safetensors")), key=lambda p: manifest[p].size)
    if not shards:
        _fail(ex, "this manifest has no .safetensors files; pass the `manifest` of section 1.")
    largest, expected = shards[-1], set(shards[:-1])
    if chosen == expected:
        return _passed(ex, f"{len(chosen)} of {len(shards)} shards, {largest} left out.")
    if largest in chosen:
        _fail(ex, f"the largest shard ({largest}, {manifest[largest].size:,} bytes) is still selected: exclude it.")
    if any(not p.endswith(".safetensors") for p in chosen):
        _fail(ex, f"non-weight files selected: {sorted(p for p in chosen if not p.endswith('.safetensors'))}.")
    if chosen - set(manifest):
        _fail(ex, f"not in the manifest: {sorted(chosen - set(manifest))[:3]}.")
    _fail(ex, f"{len(expected - chosen)} shard(s) that should be fetched are missing, e.g. "
              f"{sorted(expected - chosen)[0]}.")


def check_01_expert(files_for_rank, sizes) -> Result:
    """`files_for_rank(names, rank)`: the files GPU rank r of an 8-GPU SGLang server reads (TP-common + its own)."""
    ex = "01 expert"
    if files_for_rank is None:
        return _not_attempted(ex, "Define `def files_for_rank(names, rank): ...` returning the file names rank "
                                  "`rank` reads.")
    if not callable(files_for_rank):
        _fail(ex, f"`files_for_rank` should be a function (def files_for_rank(names, rank): ...), got "
                  f"{type(files_for_rank).__name__}.")
    from .download import tensor_parallel_layout

    layout = tensor_parallel_layout(sizes)
    names = list(sizes)
    union = set()
    for rank in range(layout["ranks"]):
        try:
            mine = files_for_rank(list(names), rank)
        except Exception as error:  # noqa: BLE001 - the learner's code
            _fail(ex, f"files_for_rank(names, {rank}) raised {type(error).__name__}: {error}")
        if mine is None:
            _fail(ex, f"files_for_rank(names, {rank}) returned None: return the list of file names.")
        mine = list(mine)
        if len(set(mine)) != len(mine):
            _fail(ex, f"rank {rank}: some files are listed twice.")
        stray = [n for n in mine if n not in sizes]
        if stray:
            _fail(ex, f"rank {rank}: names that are not in `names`: {stray[:3]}.")
        want_files = layout["common_files"] + layout["files_per_rank"][rank]
        want_bytes = layout["common_bytes"] + layout["bytes_per_rank"][rank]
        if len(mine) != want_files or sum(sizes[n] for n in mine) != want_bytes:
            common = [n for n in mine if n.endswith("-TP-common.safetensors")]
            _fail(ex, f"rank {rank} got {len(mine)} files ({len(common)} TP-common); it should read "
                      f"{layout['common_files']} TP-common + {layout['files_per_rank'][rank]} of its own "
                      f"(names ending -TP-{rank:03d}.safetensors).")
        union.update(mine)
    if union != set(sizes):
        _fail(ex, f"together the ranks miss {len(set(sizes) - union)} file(s), e.g. {sorted(set(sizes) - union)[0]}.")
    return _passed(ex, f"every rank reads {layout['common_files']} TP-common files plus its own; together the "
                       f"{layout['ranks']} ranks read all {len(sizes)} files.")


# ------------------------------------------------------------------------------------------------ lesson 02


def check_02_starter(expert_gb) -> Result:
    """Gigabytes of Grok 2.5's expert weights in bf16."""
    ex = "02 starter"
    if expert_gb is None:
        return _not_attempted(ex, "Set `expert_gb` from grok.expert_params (2 bytes each in bf16, GB = 10^9 bytes).")
    answer = _number(ex, "expert_gb", expert_gb)
    from .memory import grok2_parameter_breakdown

    expected = grok2_parameter_breakdown(_grok_config())["experts"] * 2 / GB
    if abs(answer - expected) < 0.1:
        return _passed(ex, f"{answer:.1f} GB of experts in bf16, of {_grok().weight_bytes('bf16') / GB:.0f} GB in all.")
    if abs(answer - expected / 2) < 0.1:
        _fail(ex, "that is one byte per parameter; bf16 takes 2 bytes.")
    if abs(answer - expected * 1e9 / 1024**3) < 0.1:
        _fail(ex, "that is GiB (2^30 bytes); the question asks for GB (10^9 bytes).")
    if abs(answer - expected * 1e9) < 1e8:
        _fail(ex, "that is bytes: divide by 1e9 for GB.")
    _fail(ex, f"{answer:.3g} GB is not it: expert parameters x 2 bytes / 1e9.")


def _layer0_routing(model, tokenizer, prompt: str):
    import torch

    moe = model.model.layers[0].block_sparse_moe
    grab = {}
    handle = moe.register_forward_hook(lambda module, args, output: grab.update(x=args[0]))
    try:
        inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    _, _, chosen = moe.route(grab["x"].reshape(-1, grab["x"].shape[-1]))
    return torch.bincount(chosen.flatten().cpu(), minlength=len(moe.experts))


def check_02_practitioner(busiest_expert, model, tokenizer, prompt: str) -> Result:
    """The expert of layer 0 that received the most tokens of `prompt` (ties: any of the busiest)."""
    ex = "02 practitioner"
    if busiest_expert is None:
        return _not_attempted(ex, "Route your prompt through layer 0 (a forward hook on block_sparse_moe, then "
                                  "moe.route) and set `busiest_expert`.")
    layer = getattr(getattr(getattr(model, "model", None), "layers", [None])[0], "block_sparse_moe", None)
    if layer is None or not hasattr(layer, "route"):
        return _skipped(ex, "this profile's model routes differently (no Grok 2 `route`); use the tiny or grok-2 "
                            "profile.")
    if not isinstance(prompt, str) or not prompt.strip():
        _fail(ex, "pass the prompt you routed (a non-empty string) as the last argument.")
    answer = _whole(ex, "busiest_expert", busiest_expert)
    counts = _layer0_routing(model, tokenizer, prompt)
    if not 0 <= answer < len(counts):
        _fail(ex, f"expert {answer} does not exist: layer 0 has experts 0 to {len(counts) - 1}.")
    if counts[answer] != counts.max():
        _fail(ex, f"expert {answer} got {int(counts[answer])} token slots, but expert {int(counts.argmax())} got "
                  f"{int(counts.max())}. Count every (token, chosen expert) pair: torch.bincount over all top-2 "
                  "choices.")
    return _passed(ex, f"expert {answer} took {int(counts[answer])} of {int(counts.sum())} token slots "
                       f"(tokens per expert: {counts.tolist()}).")


def check_02_expert(last_position_multiplier) -> Result:
    """Grok 2's attention-temperature multiplier at the last position of a 131072-token context."""
    ex = "02 expert"
    if last_position_multiplier is None:
        return _not_attempted(ex, "Set `last_position_multiplier` with attention_temperature(torch.tensor([...]), "
                                  "1024).")
    answer = _number(ex, "last_position_multiplier", last_position_multiplier)
    expected = math.log2(131071) / math.log2(1024)
    # 4e-7: float32 rounding passes, the off-by-one position (1.1e-6 away) does not
    if abs(answer - expected) < 4e-7:
        return _passed(ex, f"x{answer:.3f}: at the end of a full context the attention scores are sharpened by "
                           f"{(answer - 1) * 100:.0f}%.")
    if abs(answer - math.log2(131072) / 10) < 4e-7:
        _fail(ex, "off by one: positions count from 0, so the last of 131072 tokens is at position 131071.")
    if abs(answer - 1.0) < 1e-6:
        _fail(ex, "1.0 is the multiplier up to position 1024; the last position is far beyond it.")
    _fail(ex, f"{answer:.4g} is not it: log2(p) / log2(1024) at the last position.")


# ------------------------------------------------------------------------------------------------ lesson 03


def check_03_starter(h100_nf4_128k) -> Result:
    """H100 80 GB GPUs for Grok 2.5 in nf4 plus one 128K-token conversation."""
    ex = "03 starter"
    if h100_nf4_128k is None:
        return _not_attempted(ex, "Set `h100_nf4_128k` with grok.gpus_needed(80 * GB, 'nf4', context_tokens=...).")
    answer = _whole(ex, "h100_nf4_128k", h100_nf4_128k)
    grok = _grok()
    expected = grok.gpus_needed(80 * GB, "nf4", context_tokens=131072)
    if answer == expected:
        return _passed(ex, f"{answer} x H100: {grok.weight_bytes('nf4') / GB:.0f} GB of 4-bit weights plus "
                           f"{grok.kv_cache_bytes(131072) / GB:.1f} GB of KV cache for 131072 tokens.")
    if answer == grok.gpus_needed(80 * GB, "nf4"):
        _fail(ex, "that is the count for the default 8K context; the question asks for 128K (131072 tokens).")
    if answer == grok.gpus_needed(80 * GB, "nf4", context_tokens=128000):
        _fail(ex, "128K means 131072 tokens (2^17), not 128000.")
    _fail(ex, f"{answer} is too {'many' if answer > expected else 'few'}: nf4 weights + the bf16 KV cache of 131072 "
              "tokens, 90% of 80 GB usable per card.")


def check_03_practitioner(experts_kept) -> Result:
    """A BitsAndBytesConfig that quantizes everything to NF4 except the experts (kept in full precision)."""
    ex = "03 practitioner"
    if experts_kept is None:
        return _not_attempted(ex, "Set `experts_kept` to a BitsAndBytesConfig(load_in_4bit=True, ..., "
                                  "llm_int8_skip_modules=[...]) that leaves the experts unquantized.")
    from transformers import BitsAndBytesConfig

    if not isinstance(experts_kept, BitsAndBytesConfig):
        _fail(ex, f"`experts_kept` should be a transformers.BitsAndBytesConfig, got {type(experts_kept).__name__}.")
    if not experts_kept.load_in_4bit or experts_kept.bnb_4bit_quant_type != "nf4":
        _fail(ex, "the rest of the model should be NF4: load_in_4bit=True, bnb_4bit_quant_type='nf4'.")
    from .quantization import quantization_support

    if not quantization_support().available:
        return _skipped(ex, "bitsandbytes cannot run on this machine (lesson 03, section 1).")
    from .loading import load_model

    model = load_model(quantization_config=experts_kept, verbose=False)
    quantized, experts_quantized, experts_full = [], [], []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind == "Linear4bit":
            quantized.append(name)
            if ".experts." in name:
                experts_quantized.append(name)
        elif kind == "Linear" and ".experts." in name:
            experts_full.append(name)
    del model
    if experts_quantized:
        _fail(ex, f"{len(experts_quantized)} expert matrices are still 4-bit, e.g. {experts_quantized[0]}. "
                  "llm_int8_skip_modules entries match from the start of a module's name or as its suffix: "
                  "'experts' matches nothing; a regular expression such as r'.*\\.experts\\..*' does.")
    if not experts_full:
        _fail(ex, "this model has no expert linear layers to keep (use the tiny or grok-2 profile).")
    if not quantized:
        _fail(ex, "nothing was quantized: the skip list catches every layer; only the experts should stay.")
    return _passed(ex, f"{len(experts_full)} expert matrices kept in full precision, {len(quantized)} other "
                       "matrices in NF4.")


def _double_quant_prediction(weights: int) -> int:
    blocks = math.ceil(weights / 64)
    return 3 * blocks - 4 * math.ceil(blocks / 256) - 1028


def check_03_expert(double_quant_saving, measure: bool = True) -> Result:
    """`double_quant_saving(w)`: bytes double quantization saves on one NF4 matrix of w weights.

    Checked against the layout's arithmetic on several sizes and, where bitsandbytes runs (`measure=True`), against
    the bytes actually stored by the profile's model loaded with and without double quantization.
    """
    ex = "03 expert"
    if double_quant_saving is None:
        return _not_attempted(ex, "Define `def double_quant_saving(weights): ...` returning the bytes saved on one "
                                  "matrix of that many weights.")
    if not callable(double_quant_saving):
        _fail(ex, f"`double_quant_saving` should be a function of the matrix's weight count, got "
                  f"{type(double_quant_saving).__name__}.")
    for weights in (64 * 64, 64 * 256, 64 * 1000 + 5, 8192 * 1024, 8192 * 16384):
        want = _double_quant_prediction(weights)
        try:
            got = double_quant_saving(weights)
        except Exception as error:  # noqa: BLE001 - the learner's code
            _fail(ex, f"double_quant_saving({weights}) raised {type(error).__name__}: {error}")
        got = _number(ex, f"double_quant_saving({weights})", got)
        if got != want:
            blocks = math.ceil(weights / 64)
            _fail(ex, f"for a matrix of {weights:,} weights ({blocks:,} blocks of 64) you predict {got:,.0f} bytes "
                      f"saved. Per block: 4 bytes without, 1 with; plus 4 bytes per 256 blocks (round up) and 1,028 "
                      "bytes per matrix with double quantization.")
    break_even = next(w for w in range(64, 10**7, 64) if _double_quant_prediction(w) > 0)
    if not measure:
        return _passed(ex, f"the arithmetic holds; it pays off from about {break_even:,} weights per matrix.")
    from .quantization import quantization_support

    if not quantization_support().available:
        return _skipped(ex, "the arithmetic holds, but bitsandbytes cannot run here to measure it.")
    saved, sizes = _measured_double_quant_saving()
    predicted = sum(int(double_quant_saving(w)) for w in sizes)
    if predicted != saved:
        _fail(ex, f"on this model double quantization saves {saved:,} bytes, your function predicts {predicted:,}.")
    effect = f"saves {saved:,} bytes" if saved >= 0 else f"costs {-saved:,} bytes (matrices this small lose)"
    return _passed(ex, f"on this model double quantization {effect} over {len(sizes)} matrices of {min(sizes):,} to "
                       f"{max(sizes):,} weights, exactly as predicted; it pays off from about {break_even:,} weights "
                       "per matrix (Grok 2.5's smallest quantized matrix has 8,388,608).")


def _measured_double_quant_saving() -> tuple[int, list[int]]:
    from transformers import BitsAndBytesConfig

    from .loading import load_model
    from .quantization import quantized_footprint

    stored, sizes = {}, []
    for double in (True, False):
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double)
        model = load_model(quantization_config=config, verbose=False)
        stored[double] = quantized_footprint(model).stored_bytes
        if not double:
            sizes = [m.in_features * m.out_features for m in model.modules() if type(m).__name__ == "Linear4bit"]
        del model
    return stored[False] - stored[True], sizes


# ------------------------------------------------------------------------------------------------ lesson 04

STARTER_04 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is QLoRA?"}]


def check_04_starter(rendered, tokenizer) -> Result:
    """The string the model receives for the system prompt "Be brief." and the question "What is QLoRA?"."""
    ex = "04 starter"
    if rendered is None:
        return _not_attempted(ex, "Set `starter` to render(tokenizer, [system message, user message]).")
    if not isinstance(rendered, str):
        _fail(ex, f"`starter` should be the rendered string, got {type(rendered).__name__} (use render(), not the "
                  "token ids).")
    from .chat import render

    expected = render(tokenizer, STARTER_04)
    if rendered == expected:
        return _passed(ex, f"the model receives {rendered!r}")
    if "Be brief." not in rendered:
        _fail(ex, "the system prompt 'Be brief.' is missing: it is a message with role 'system', before the question.")
    if "What is QLoRA?" not in rendered:
        _fail(ex, "the question 'What is QLoRA?' is missing.")
    if rendered == render(tokenizer, STARTER_04, add_generation_prompt=False):
        _fail(ex, "the generation prompt is missing: the string must end by opening the assistant's turn.")
    _fail(ex, f"not what the chat template writes; compare with render(tokenizer, messages). You have {rendered!r}")


def check_04_practitioner(settings, model, tokenizer) -> Result:
    """SamplingSettings under which the answer to "What is your name?" ends right after "Grok", finish reason stop."""
    ex = "04 practitioner"
    if settings is None:
        return _not_attempted(ex, "Set `practitioner_settings` to a SamplingSettings(...) (hint: a stop string).")
    from .chat import SamplingSettings, generate

    if not isinstance(settings, SamplingSettings):
        _fail(ex, f"`practitioner_settings` should be a SamplingSettings, got {type(settings).__name__}.")
    reply = generate(model, tokenizer, [{"role": "user", "content": "What is your name?"}], settings)
    if not reply.text.rstrip().endswith("Grok"):
        _fail(ex, f"the answer is {reply.text!r}: it should end right after 'Grok'. Put what comes after it in "
                  "`stop` (keep the separator there too).")
    if reply.finish_reason != "stop":
        _fail(ex, f"the answer ends with 'Grok' but finish_reason is {reply.finish_reason!r}: it ran out of tokens "
                  "rather than hitting a stop string.")
    return _passed(ex, f"{reply.text!r}, finish reason 'stop' (stop strings are cut off, not returned).")


def check_04_expert(openai_chunks, model, tokenizer) -> Result:
    """`openai_chunks(messages, settings)`: a stream turned into OpenAI's chat.completion.chunk dictionaries."""
    ex = "04 expert"
    if openai_chunks is None:
        return _not_attempted(ex, "Define `def openai_chunks(messages, settings=SamplingSettings()): ...` that "
                                  "yields the chunks.")
    if not callable(openai_chunks):
        _fail(ex, f"`openai_chunks` should be a function, got {type(openai_chunks).__name__}.")
    from .chat import generate

    messages = [{"role": "user", "content": "What is QLoRA?"}]
    try:
        chunks = list(openai_chunks(messages))
    except Exception as error:  # noqa: BLE001 - the learner's code
        _fail(ex, f"openai_chunks(messages) raised {type(error).__name__}: {error}")
    if len(chunks) < 2:
        _fail(ex, f"{len(chunks)} chunk(s): expect one per streamed piece, then a final one.")
    try:
        choices = [c["choices"][0] for c in chunks]
    except (KeyError, IndexError, TypeError):
        _fail(ex, "every chunk is a dict {'choices': [{'delta': {...}, 'finish_reason': ...}]}.")
    expected = generate(model, tokenizer, messages)
    text = "".join((c.get("delta") or {}).get("content") or "" for c in choices)
    if text != expected.text:
        _fail(ex, f"the deltas join to {text!r}, but the model's answer is {expected.text!r}.")
    if any(c.get("finish_reason") is not None for c in choices[:-1]):
        _fail(ex, "only the last chunk carries a finish_reason; the others have None.")
    if choices[-1].get("delta") not in ({}, None) and (choices[-1]["delta"].get("content") or ""):
        _fail(ex, "the last chunk's delta should be empty ({}).")
    if choices[-1].get("finish_reason") != expected.finish_reason:
        _fail(ex, f"last finish_reason {choices[-1].get('finish_reason')!r}, expected {expected.finish_reason!r}.")
    if chunks[-1].get("usage") != expected.usage:
        _fail(ex, f"the last chunk's usage is {chunks[-1].get('usage')!r}; expected {expected.usage!r} "
                  "(the stream's completion.usage).")
    return _passed(ex, f"{len(chunks)} chunks that a client joins into {expected.text!r}, usage {expected.usage}.")


# ------------------------------------------------------------------------------------------------ lesson 05


def check_05_starter(q_proj_lora) -> Result:
    """Parameters a rank-16 LoRA adds to one of Grok 2.5's q_proj matrices."""
    ex = "05 starter"
    if q_proj_lora is None:
        return _not_attempted(ex, "Set `q_proj_lora` from r x (in + out) with r = 16.")
    answer = _whole(ex, "q_proj_lora", q_proj_lora)
    config = _grok_config()
    inputs, outputs = config.hidden_size, config.num_attention_heads * config.head_dim
    expected = 16 * (inputs + outputs)
    if answer == expected:
        return _passed(ex, f"{answer:,} parameters (A: 16 x {inputs}, B: {outputs} x 16), "
                           f"{answer / (inputs * outputs):.2%} of the {inputs * outputs:,} weights of q_proj.")
    if answer == inputs * outputs:
        _fail(ex, "that is the full matrix; LoRA adds two thin ones: A (r x in) and B (out x r).")
    if answer == 16 * inputs or answer == 16 * outputs:
        _fail(ex, "that is only one of the two LoRA matrices; add A (r x in) and B (out x r).")
    _fail(ex, f"{answer:,} is not it: r x (in + out), with in = out = 8192 for q_proj.")


def check_05_practitioner(my_answer_before, my_answer_after) -> Result:
    """The base model's and the fine-tuned model's answers to the same French question of the learner's."""
    ex = "05 practitioner"
    if my_answer_before is None or my_answer_after is None:
        return _not_attempted(ex, "Set `my_answer_before` (the untouched base model) and `my_answer_after` (the "
                                  "merged model) to the text of their answers.")
    for name, value in (("my_answer_before", my_answer_before), ("my_answer_after", my_answer_after)):
        if not isinstance(value, str):
            _fail(ex, f"`{name}` should be the answer's text (a str; a Completion's .text), got "
                      f"{type(value).__name__}.")
    if not my_answer_after.strip():
        _fail(ex, "the fine-tuned model's answer is empty.")
    if my_answer_after == my_answer_before:
        _fail(ex, "both answers are identical: did you ask the merged (fine-tuned) model for `my_answer_after` and "
                  "a freshly loaded base for `my_answer_before`?")
    return _passed(ex, f"before {my_answer_before[:60]!r} / after {my_answer_after[:60]!r}")


def check_05_expert(merged_dir, merged, tokenizer, conversations=None) -> Result:
    """`merged_dir`: the merged model saved as an ordinary checkpoint that loads back with the same logits."""
    ex = "05 expert"
    if merged_dir is None:
        return _not_attempted(ex, "Save the merged model (save_pretrained + the tokenizer) and set `merged_dir` to "
                                  "that folder.")
    import json

    import torch

    from . import finetune
    from .loading import load_model

    folder = Path(merged_dir)
    if not (folder / "config.json").is_file():
        _fail(ex, f"{folder} has no config.json: call merged.save_pretrained(merged_dir).")
    if (folder / "adapter_config.json").exists():
        _fail(ex, f"{folder} holds an adapter, not a merged model: merge_and_unload() first, then save_pretrained.")
    if not list(folder.glob("*.safetensors")):
        _fail(ex, f"{folder} has no weights (*.safetensors).")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        _fail(ex, f"{folder} has no tokenizer: tokenizer.save_pretrained(merged_dir) too, so it can be served alone.")
    if any("lora" in name for name, _ in merged.named_modules()):
        _fail(ex, "the model you passed still has LoRA layers: pass the merged one (merge_and_unload()).")
    if conversations is None:
        from .paths import DATA_DIR

        conversations = finetune.load_chat_jsonl(DATA_DIR / "finetune" / "faq_fr_heldout.jsonl")[:4]
    standalone = load_model(folder, verbose=False)
    gap = finetune.max_logit_difference(merged, standalone, tokenizer, conversations)
    tolerance = 1e-5 if merged.dtype == torch.float32 else 1e-2
    if not gap < tolerance:
        _fail(ex, f"the reloaded model differs from the merged one by {gap:.2e} in the logits (tolerance "
                  f"{tolerance:g}): was the folder written from another model?")
    architectures = json.loads((folder / "config.json").read_text()).get("architectures")
    return _passed(ex, f"{folder.name} loads alone ({architectures}), max logit difference {gap:.1e}: ready for "
                       "SGLang or vLLM.")


# ------------------------------------------------------------------------------------------------ lesson 06


def check_06_starter(starter) -> Result:
    """The openai client's reply to a question with a system prompt."""
    ex = "06 starter"
    if starter is None:
        return _not_attempted(ex, "Set `starter` to client.chat.completions.create(...) with a system and a user "
                                  "message.")
    choices = getattr(starter, "choices", None)
    if not choices:
        _fail(ex, f"`starter` should be the ChatCompletion the client returns, got {type(starter).__name__}.")
    choice = choices[0]
    if not (choice.message.content or "").strip():
        _fail(ex, "the reply has no text.")
    if choice.finish_reason != "stop":
        _fail(ex, f"finish_reason is {choice.finish_reason!r}: the answer was cut; leave max_tokens at its default or "
                  "raise it.")
    if starter.usage is None or starter.usage.prompt_tokens <= 10:
        _fail(ex, "the prompt is very short: send the system message too, before the question.")
    return _passed(ex, f"{choice.message.content!r} ({starter.usage.prompt_tokens} prompt tokens, "
                       f"{starter.usage.completion_tokens} generated)")


def check_06_practitioner(largest, client, model_name: str) -> Result:
    """The largest max_tokens the server accepts for the message "hi"."""
    ex = "06 practitioner"
    if largest is None:
        return _not_attempted(ex, "Set `largest` from the error message of a request whose max_tokens is too large.")
    answer = _whole(ex, "largest", largest)
    import openai

    messages = [{"role": "user", "content": "hi"}]
    try:
        client.chat.completions.create(model=model_name, messages=messages, max_tokens=answer, temperature=0)
    except openai.BadRequestError as error:
        _fail(ex, f"max_tokens={answer} is refused ({error.message[:120]}): your figure is too large.")
    try:
        client.chat.completions.create(model=model_name, messages=messages, max_tokens=answer + 1, temperature=0)
    except openai.BadRequestError:
        return _passed(ex, f"max_tokens={answer} is accepted and {answer + 1} refused: prompt + max_tokens must fit "
                           "the model's context.")
    _fail(ex, f"max_tokens={answer + 1} is accepted too: {answer} is not the largest.")


def check_06_expert(curve) -> Result:
    """`curve`: {concurrency: tokens_per_s} for concurrency 1, 2, 4 and 8."""
    ex = "06 expert"
    if curve is None:
        return _not_attempted(ex, "Set `curve` to {1: ..., 2: ..., 4: ..., 8: ...} tokens/s from serve.load_test.")
    if not isinstance(curve, dict):
        _fail(ex, f"`curve` should be a dict {{concurrency: tokens_per_s}}, got {type(curve).__name__}.")
    if sorted(curve) != [1, 2, 4, 8]:
        _fail(ex, f"concurrency levels {sorted(curve)}; expected exactly 1, 2, 4 and 8.")
    values = {c: _number(ex, f"curve[{c}]", v) for c, v in curve.items()}
    if any(v <= 0 for v in values.values()):
        _fail(ex, "every throughput must be positive (did a load test fail? check its 'errors').")
    best = max(values, key=values.get)
    return _passed(ex, "tokens/s " + ", ".join(f"{c}: {values[c]:.0f}" for c in sorted(values)) +
                   f"; the best here is concurrency {best}.")


CHECKS = {
    (lesson, tier): globals()[f"check_{lesson}_{tier}"]
    for lesson in ("00", "01", "02", "03", "04", "05", "06") for tier in ("starter", "practitioner", "expert")
}
