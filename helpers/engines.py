"""The production engines for Grok 2.5: each command at the engine version it was checked against, and the check.

    deployment = plan_deployment(gpu_memory_gib=80, gpus=8)    # from the memory planner: how many GPUs, which TP
    sglang = sglang_command(deployment)                         # the official path (facts 3.1), SGLang 0.5.23
    print(sglang.shell()); sglang.version                       # the version it was checked against
    vllm_command(deployment)                                    # vLLM 0.24.0: the last release that serves Grok 2
    llama_cpp_command("grok-2-UD-Q2_K_XL.gguf", gpu_layers="all", n_cpu_moe=40)   # GPU + RAM (llama.cpp hybrid)
    check_command(sglang)                                       # that version's registry, tokenizer and options

A command is never emitted for a version the course did not check: each engine's version comes from
`helpers.engine_sources.ENGINES`, and `check_command` reads that release's own files (`helpers.engine_files`): the
model registry must *serve* `Grok1ForCausalLM` (vLLM after 0.24.0 lists it among the "previously supported" models),
the tokenizer loader must read `tokenizer.tok.json`, and every option must be one the engine defines.

Every command binds 127.0.0.1 and serves the same OpenAI-compatible API as `helpers.serve`, so the client code of
lesson 06 works against any of them: only `base_url` and `model` change. GGUF files (export, sizes) are in
`helpers.gguf`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from .engine_sources import ENGINES
from .errors import CourseError
from .units import GB, GiB

# The released checkpoint's expert files are split for exactly 8 tensor-parallel ranks (facts 3.2).
RELEASED_TP = 8
# How SGLang 0.5.23's grok.py reads a Grok checkpoint at TP > 1 (read in its wheel): each rank globs
# `*-TP-{rank:03d}.safetensors` and `*-TP-common.safetensors`, and falls back to the ordinary loader (every
# *.safetensors) only when nothing matches; `load_presharded_moe` (a config attribute, True when absent) tells the
# FusedMoE weight loader to copy each expert tensor as it is instead of cutting the rank's slice out of it. So on the
# released files at TP 4 a rank reads one 2,048-wide slice where it needs 4,096, silently, and at TP 16 ranks 8-15
# find no expert file. The one re-pack that serves every TP: whole experts in ordinary shards
# (helpers.grok2.convert_released_checkpoint, the copy vLLM needs too), with `load_presharded_moe` turned off so that
# SGLang cuts each rank's slice itself.
SGLANG_PRESHARDED_OFF = '{"load_presharded_moe": false}'
SGLANG_REPACK = ("helpers.grok2.convert_released_checkpoint(src, dst) (whole experts in ordinary shards, streamed; the "
                 "same copy vLLM needs), served with --json-model-override-args '" + SGLANG_PRESHARDED_OFF + "' so "
                 "that SGLang cuts each rank's expert slice itself")
SGLANG_TP_BUG = ("SGLang at TP < 8 on the released files silently loads incomplete expert weights (reported in SGLang "
                 "PR #36438, open; facts 3.2); another TP needs a re-packed checkpoint: " + SGLANG_REPACK + ".")
SGLANG_DEFAULT_PORT = 30000
VLLM_DEFAULT_PORT = 8000
LLAMA_CPP_DEFAULT_PORT = 8080
LOCAL_HOST = "127.0.0.1"
SGLANG_VERSION = ENGINES["sglang"].version
VLLM_VERSION = ENGINES["vllm"].version
LLAMA_CPP_VERSION = ENGINES["llama.cpp"].version  # llama-cpp-python's release; its vendored llama.cpp is what runs

# llama.cpp's Grok graph versus the reference (SGLang), facts 4.6: what a GGUF user gets.
LLAMA_CPP_DIFFERENCES = {
    "rope": "RoPE: the converter turns rope_type 'original' into YaRN (factor 16), the reference uses plain RoPE",
    "temperature": "attention temperature for positions beyond attn_temperature_len: written to the file, not used "
                   "by the graph",
    "router_cap": "router logit soft-cap 30: written, not applied",
    "renormalise": "top-2 expert weights renormalised to sum to 1 (the reference keeps the raw softmax weights)",
}


# ============================================================================================ the hardware plan


def _grok2_plan():
    """The memory plan of the released Grok 2.5 config (shipped in data/; built on the meta device, once)."""
    from .memory import grok2_released_plan

    return grok2_released_plan()


@dataclass(frozen=True)
class Deployment:
    """How Grok 2.5 is laid out on a GPU node, from the memory planner (helpers.memory)."""

    gpus: int  # GPUs on the node
    gpu_memory_gib: float  # per GPU, as sold: an "80 GB" GPU holds 80 GiB (helpers.accelerators)
    precision: str  # weight precision in GPU memory ("fp8": SGLang/vLLM quantize the bf16 checkpoint while loading)
    context_tokens: int
    gpus_needed: int  # by memory alone (weights + KV cache of one context, 90% of each GPU usable)
    tensor_parallel: int  # what the engine runs with
    weights_gb: float
    weights_per_gpu_gb: float
    kv_cache_gb: float
    disk_gb: float  # the released bf16 checkpoint on disk
    notes: tuple[str, ...] = ()
    released_layout: bool = True  # False: a converted checkpoint (whole experts), any TP
    engine: str = "sglang"  # whose memory rules decided the TP (helpers.engine_memory)

    def requirements(self) -> list[str]:
        return [
            f"{self.tensor_parallel} GPUs with more than {self.weights_per_gpu_gb:.0f} GB each for the weights "
            f"({self.precision}: {self.weights_gb:.0f} GB in all) plus room for the KV cache "
            f"({self.kv_cache_gb:.1f} GB per {self.context_tokens}-token sequence)",
            f"{self.disk_gb:.0f} GB of disk for the checkpoint (bf16, as released), more for converted copies",
            "the tokenizer: tokenizer.tok.json (needs the tiktoken package) or alvarobartt/grok-2-tokenizer",
        ]


def plan_deployment(gpu_memory_gib: float = 80, gpus: int = 8, precision: str = "fp8", context_tokens: int = 8192,
                    released_layout: bool = True, engine: str = "sglang") -> Deployment:
    """Decide the tensor-parallel size for Grok 2.5 on `gpus` GPUs of `gpu_memory_gib` each from its real config.

    `gpu_memory_gib`: the GPU's memory as sold, which counts in binary units (an "80 GB" H100 holds 80 GiB; pass
    `helpers.accelerators.H100_SXM.memory_bytes / GiB` to take it from the datasheet entry). With the released
    (pre-sharded) files the answer is always 8 (SGLang's loader reads exactly 8 expert slices); with a converted
    checkpoint (helpers.grok2.convert_released_checkpoint) it is the smallest power of two at which the engine's own
    memory rules hold (helpers.engine_memory): for `engine="sglang"`, each GPU's bf16 slice while it loads (it
    quantizes to FP8 after) and then weights + one context's KV cache within its default --mem-fraction-static; for
    `engine="vllm"`, which quantizes while loading, weights + KV cache within the course's 90%.
    """
    from .engine_memory import sglang_loading_bytes, sglang_mem_fraction_static
    from .memory import GPU_USABLE_FRACTION

    if (isinstance(gpu_memory_gib, bool) or not isinstance(gpu_memory_gib, (int, float))
            or not 0 < gpu_memory_gib <= 10_000):
        raise CourseError(f"gpu_memory_gib must be a GPU's memory in GiB (0 to 10,000), got {gpu_memory_gib!r}.",
                          "Give what the GPU is sold with: 80 for an \"80 GB\" H100 (its memory counts in GiB).")
    if engine not in ("sglang", "vllm"):
        raise CourseError(f"engine must be 'sglang' or 'vllm', got {engine!r}.", "pass engine='sglang' or 'vllm'")
    plan = _grok2_plan()
    memory = gpu_memory_gib * GiB
    needed = plan.gpus_needed(memory, precision, context_tokens)

    def holds(tp: int) -> bool:
        serving = plan.weight_bytes(precision) / tp + plan.kv_cache_bytes(context_tokens) / min(tp, plan.kv_heads)
        if engine == "vllm":
            return serving <= GPU_USABLE_FRACTION * memory
        loading = sglang_loading_bytes(plan, tp) if precision == "fp8" else 0.0
        return loading <= GPU_USABLE_FRACTION * memory and serving <= sglang_mem_fraction_static(memory, tp) * memory

    sizes = [1 << k for k in range(7)]  # 1 ... 64: the powers of two that divide Grok 2.5's 64 query heads
    by_memory = next((tp for tp in sizes if holds(tp)), None)
    if by_memory is None:
        raise CourseError(f"No tensor-parallel size up to {sizes[-1]} holds Grok 2.5 in {precision} on GPUs of "
                          f"{gpu_memory_gib:g} GiB with {engine}.", "use GPUs with more memory, or a GGUF with "
                          "llama.cpp (lesson 07)")
    notes = []

    def loading_note(tp: int) -> str:
        return (f"SGLang loads the bf16 weights first and quantizes them to FP8 after (helpers.engine_memory): "
                f"{sglang_loading_bytes(plan, tp) / GB:.1f} GB per GPU while loading at TP {tp}.")

    if released_layout:
        if by_memory > RELEASED_TP:
            raise CourseError(
                f"Grok 2.5 in {precision} with {engine} needs tensor parallelism {by_memory} on GPUs of "
                f"{gpu_memory_gib:g} GiB; the released checkpoint runs at tensor parallelism {RELEASED_TP} only"
                + (f" ({loading_note(by_memory)})" if engine == "sglang" and precision == "fp8" else "."),
                "Use GPUs with more memory (8 x 80 GB for SGLang's FP8), or re-pack the checkpoint for TP 16 (as "
                f"huihui-ai/grok-2 does for 16 Ascend NPUs): {SGLANG_REPACK}.",
            )
        tp = RELEASED_TP
        if by_memory < RELEASED_TP:
            notes.append(f"Memory alone would allow TP {by_memory}, but the released expert files are split in "
                         f"{RELEASED_TP}: {SGLANG_TP_BUG} TP stays {RELEASED_TP}.")
    else:
        tp = by_memory
        notes.append("A converted checkpoint (whole experts in ordinary shards) lets the engine choose any TP that "
                     "divides the heads.")
    if engine == "sglang" and precision == "fp8":
        notes.append(loading_note(tp))
    if gpus < tp:
        raise CourseError(f"This plan needs {tp} GPUs and the node has {gpus}.",
                          f"Use a node with {tp} GPUs of > {plan.weight_bytes(precision) / GB / tp:.0f} GB, "
                          "or a GGUF quantization with llama.cpp on a large-memory machine (see lesson 06).")
    weights = plan.weight_bytes(precision)
    return Deployment(gpus=gpus, gpu_memory_gib=gpu_memory_gib, precision=precision, context_tokens=context_tokens,
                      gpus_needed=needed, tensor_parallel=tp, weights_gb=weights / GB,
                      weights_per_gpu_gb=weights / GB / tp,
                      kv_cache_gb=plan.kv_cache_bytes(context_tokens) / GB, disk_gb=plan.weight_bytes("bf16") / GB,
                      notes=tuple(notes), released_layout=released_layout, engine=engine)


# ================================================================================================== commands


@dataclass
class EngineCommand:
    """A server command line, the engine version it was checked against, what it needs, where its API will be."""

    engine: str  # "sglang", "vllm", "llama.cpp" (helpers.engine_sources.ENGINES)
    argv: list[str]
    port: int
    host: str = LOCAL_HOST
    needs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parser_argv_start: int = 0  # where the engine's own options begin in argv (after the program / module name)
    version: str = ""  # the engine release the command was checked against
    # Shell lines to run first, e.g. one that finds the first part of a split GGUF and sets a variable; argv then
    # refers to it as "$NAME" (printed in double quotes, so the shell expands it).
    setup: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise CourseError(f"Unknown engine {self.engine!r}.", f"use one of {', '.join(ENGINES)}")
        self.version = self.version or ENGINES[self.engine].version
        if self.version != ENGINES[self.engine].version:
            raise CourseError(f"The course checked {self.engine} {ENGINES[self.engine].version} only, not "
                              f"{self.version}.", f"use {ENGINES[self.engine].package}=={ENGINES[self.engine].version}")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def options(self) -> list[str]:
        return self.argv[self.parser_argv_start:]

    @property
    def checked_against(self) -> str:
        """'SGLang 0.5.23', 'vLLM 0.24.0', 'llama.cpp as vendored in llama-cpp-python 0.3.36': what the check read."""
        if self.engine == "llama.cpp":
            return f"llama.cpp as vendored in llama-cpp-python {self.version}"
        return f"{ENGINE_NAMES[self.engine]} {self.version}"

    @property
    def install(self) -> str:
        spec = ENGINES[self.engine]
        if self.engine == "llama.cpp":
            return (f"llama.cpp as vendored in llama-cpp-python {spec.version}: "
                    "`python -m helpers.engine_sources build` compiles llama-server (CPU), or build it with CUDA / "
                    "Metal from the same source")
        return f"pip install {spec.package}=={spec.version}"

    def shell(self) -> str:
        """The command, one option per line, ready to paste into a terminal (after its setup lines, if any)."""
        head = " ".join(_quote(word) for word in self.argv[: self.parser_argv_start])
        lines, options = [head], self.options
        i = 0
        while i < len(options):
            if i + 1 < len(options) and not options[i + 1].startswith("-"):
                lines.append(f"{_quote(options[i])} {_quote(options[i + 1])}")
                i += 2
            else:
                lines.append(_quote(options[i]))
                i += 1
        return "".join(line + "\n" for line in self.setup) + " \\\n    ".join(lines)

    def __str__(self) -> str:
        return self.shell()


ENGINE_NAMES = {"sglang": "SGLang", "vllm": "vLLM", "llama.cpp": "llama.cpp"}
_SHELL_VARIABLE = re.compile(r"\$[A-Z_][A-Z0-9_]*")


def _quote(word: str) -> str:
    """shlex.quote, except a lone shell variable ("$GROK2_GGUF", set by a setup line), which stays expandable."""
    return f'"{word}"' if _SHELL_VARIABLE.fullmatch(word) else shlex.quote(word)


def _lora_pairs(adapters: dict[str, str] | None) -> list[str]:
    return [f"{name}={path}" for name, path in (adapters or {}).items()]


def sglang_command(deployment: Deployment | None = None, model_path: str = "/local/grok-2",
                   tokenizer_path: str | None = None, *, host: str = LOCAL_HOST, port: int = SGLANG_DEFAULT_PORT,
                   served_model_name: str = "grok-2", adapters: dict[str, str] | None = None,
                   api_key_placeholder: str | None = None, context_length: int | None = None,
                   nnodes: int = 1, node_rank: int = 0, dist_init_addr: str | None = None) -> EngineCommand:
    """The official SGLang command of the model card (facts 3.1), with the TP from the plan and a local bind.

    Two nodes (`nnodes=2`, `node_rank` 0 and 1, `dist_init_addr="HEAD_IP:PORT"`): the same command on each node, the
    TP ranks spread over both; the released TP-8 layout allows 2 x 4 GPUs. A deployment planned on a converted
    checkpoint (`released_layout=False`: `model_path` is that copy) runs at its own TP, with SGLang told to cut the
    whole experts itself (SGLANG_REPACK)."""
    deployment = deployment or plan_deployment()
    if deployment.released_layout and deployment.tensor_parallel != RELEASED_TP:
        raise CourseError(f"TP {deployment.tensor_parallel} on the released files: {SGLANG_TP_BUG}",
                          f"keep TP {RELEASED_TP} on the released files, or plan on a converted checkpoint "
                          "(plan_deployment(..., released_layout=False)) and pass its folder as model_path")
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise CourseError(f"node_rank {node_rank} of {nnodes} nodes is impossible.", "use 0 <= node_rank < nnodes")
    if nnodes > 1 and not dist_init_addr:
        raise CourseError("A multi-node SGLang run needs the first node's address.",
                          "pass dist_init_addr='IP_OF_NODE_0:PORT' (the same on every node)")
    argv = ["python3", "-m", "sglang.launch_server",
            "--model", model_path,
            "--tokenizer-path", tokenizer_path or f"{model_path.rstrip('/')}/tokenizer.tok.json",
            "--tp", str(deployment.tensor_parallel),
            "--quantization", deployment.precision,
            "--attention-backend", "triton",
            "--host", host, "--port", str(port),
            "--served-model-name", served_model_name]
    if not deployment.released_layout:
        argv += ["--json-model-override-args", SGLANG_PRESHARDED_OFF]
    if nnodes > 1:
        argv += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--dist-init-addr", dist_init_addr]
    if context_length:
        argv += ["--context-length", str(context_length)]
    if api_key_placeholder:
        argv += ["--api-key", api_key_placeholder]
    if adapters:
        argv += ["--enable-lora", "--lora-paths", *_lora_pairs(adapters)]
    needs = [f"SGLang {SGLANG_VERSION} (`pip install sglang=={SGLANG_VERSION}`; the card asks for >= 0.5.1), CUDA GPUs",
             *deployment.requirements()]
    notes = [f"--quantization {deployment.precision} converts the bf16 weights while loading: "
             f"{deployment.weights_gb:.0f} GB of weights, {deployment.weights_per_gpu_gb:.1f} GB per GPU at TP "
             f"{deployment.tensor_parallel}.",
             "--attention-backend triton: SGLang's Triton kernels implement Grok 2's attention cap and its length "
             "temperature.",
             *deployment.notes]
    if not deployment.released_layout:
        notes.append(f"--model is the converted checkpoint (whole experts) and --json-model-override-args "
                     f"'{SGLANG_PRESHARDED_OFF}' makes SGLang cut each rank's expert slice itself: {SGLANG_REPACK}.")
    if not any("#36438" in note for note in notes):  # the plan's note already names it where memory allows TP < 8
        notes.append(f"Tensor parallelism: {SGLANG_TP_BUG}")
    return EngineCommand("sglang", argv, port, host, needs, notes, parser_argv_start=3)


def vllm_command(deployment: Deployment | None = None, model_path: str = "/local/grok-2", *, host: str = LOCAL_HOST,
                 port: int = VLLM_DEFAULT_PORT, served_model_name: str = "grok-2",
                 adapters: dict[str, str] | None = None, max_lora_rank: int = 16,
                 api_key_placeholder: str | None = None, max_model_len: int | None = 8192) -> EngineCommand:
    """vLLM 0.24.0's command (facts 3.3): the last vLLM that serves Grok 2. It reads tokenizer.tok.json itself
    (tokenizer mode `grok2`, picked for Grok1ForCausalLM; needs tiktoken)."""
    deployment = deployment or plan_deployment(engine="vllm")
    argv = ["vllm", "serve", model_path,
            "--tensor-parallel-size", str(deployment.tensor_parallel),
            "--quantization", deployment.precision,
            "--host", host, "--port", str(port),
            "--served-model-name", served_model_name]
    if max_model_len:
        argv += ["--max-model-len", str(max_model_len)]
    if api_key_placeholder:
        argv += ["--api-key", api_key_placeholder]
    if adapters:
        argv += ["--enable-lora", "--lora-modules", *_lora_pairs(adapters), "--max-lora-rank", str(max_lora_rank)]
    needs = [f"vLLM {VLLM_VERSION} exactly (`pip install vllm=={VLLM_VERSION}`): vLLM removed Grok after 0.24.0, and "
             "later releases refuse the architecture as 'previously supported'", "tiktoken, CUDA GPUs",
             *deployment.requirements()]
    notes = ["vLLM's loader was not verified on the released pre-sharded expert files (its only Grok 2 test uses "
             "dummy weights): convert them first with helpers.grok2.convert_released_checkpoint(src, dst) and serve "
             "dst (same tensor names, whole experts).",
             "vLLM does not implement Grok 2's attention temperature and caps logits before the 0.5 scale "
             "(facts 4.6): answers can differ slightly from SGLang's.",
             *deployment.notes]
    return EngineCommand("vllm", argv, port, host, needs, notes, parser_argv_start=2)


def llama_cpp_command(gguf_path: str, *, host: str = LOCAL_HOST, port: int = LLAMA_CPP_DEFAULT_PORT,
                      alias: str = "grok-2", context_size: int = 8192, gpu_layers: int | str | None = None,
                      cpu_moe: bool = False, n_cpu_moe: int | None = None,
                      override_tensors: list[str] | None = None, threads: int | None = None,
                      api_key_placeholder: str | None = None, binary: str = "llama-server",
                      setup: list[str] | None = None) -> EngineCommand:
    """llama.cpp's OpenAI-compatible `llama-server` for a GGUF file (chat template taken from the file, --jinja).

    GPU + system RAM ("hybrid"), checked against the vendored llama.cpp's common/arg.cpp:
    - `gpu_layers`: layers on the GPU (`--n-gpu-layers`: a number, "all" or "auto");
    - `cpu_moe=True`: every layer's expert tensors stay in system RAM (`--cpu-moe`), the rest goes to the GPU;
    - `n_cpu_moe=N`: the experts of the first N layers stay in RAM (`--n-cpu-moe N`), the later ones go to the GPU;
    - `override_tensors`: `PATTERN=BUFFER` rules (`--override-tensor`, e.g. `blk\\.(1[0-9])\\.ffn_.*_exps=CPU`).
    For a split GGUF (`...-00001-of-00003.gguf`) pass the first part: llama.cpp opens the others itself.
    `setup`: shell lines printed before the command (one that sets the variable `gguf_path` names, "$NAME")."""
    if cpu_moe and n_cpu_moe is not None:
        raise CourseError("cpu_moe and n_cpu_moe both place experts in RAM.",
                          "use cpu_moe=True for every layer, or n_cpu_moe=N for the first N layers")
    if n_cpu_moe is not None and n_cpu_moe < 0:
        raise CourseError(f"n_cpu_moe={n_cpu_moe} is negative.", "give the number of layers, 0 or more")
    if isinstance(gpu_layers, str) and gpu_layers not in ("all", "auto"):
        raise CourseError(f"gpu_layers={gpu_layers!r} is not a layer count.", "use a number, 'all' or 'auto'")
    for rule in override_tensors or []:
        if "=" not in rule:
            raise CourseError(f"override_tensors rule {rule!r} has no buffer.", "write PATTERN=BUFFER, e.g. ...=CPU")
    argv = [binary, "--model", gguf_path, "--host", host, "--port", str(port), "--alias", alias,
            "--ctx-size", str(context_size), "--jinja"]
    if gpu_layers is not None:
        argv += ["--n-gpu-layers", str(gpu_layers)]
    if cpu_moe:
        argv += ["--cpu-moe"]
    if n_cpu_moe is not None:
        argv += ["--n-cpu-moe", str(n_cpu_moe)]
    for rule in override_tensors or []:
        argv += ["--override-tensor", rule]
    if threads:
        argv += ["--threads", str(threads)]
    if api_key_placeholder:
        argv += ["--api-key", api_key_placeholder]
    needs = [f"llama.cpp with Grok 2 support (PR #15539, Aug 2025); checked: the llama.cpp vendored in "
             f"llama-cpp-python {LLAMA_CPP_VERSION}",
             "RAM (or unified/GPU memory) for the GGUF file plus the KV cache: helpers.gguf.gguf_size(config, quant)"]
    notes = [f"llama.cpp differs from the reference (facts 4.6): {'; '.join(LLAMA_CPP_DIFFERENCES.values())}."]
    if cpu_moe or n_cpu_moe or override_tensors:
        notes.append("Experts kept in system RAM are read from RAM at every token: decoding is bound by RAM bandwidth "
                     "for those bytes (helpers.machines prices it).")
    return EngineCommand("llama.cpp", argv, port, host, needs, notes, parser_argv_start=1, setup=list(setup or []))


GGUF_VARIABLE = "GROK2_GGUF"


def unsloth_llama_cpp_command(quant: str, local_dir: str = "grok-2-GGUF", **options) -> EngineCommand:
    """`llama_cpp_command` for one quantization of unsloth/grok-2-GGUF, as `hf download ... --local-dir local_dir`
    lays it out (`helpers.gguf.unsloth_file(quant)`): --model is the file, or the first of its parts. Where the course
    has not recorded how many parts a type has, the part count is part of the first file's name
    (`...-00001-of-0000N.gguf`) and llama.cpp needs that exact name: a setup line finds it in the downloaded folder
    and the command passes it as "$GROK2_GGUF" (llama.cpp never sees a pattern)."""
    from .gguf import unsloth_download_command, unsloth_file

    entry = unsloth_file(quant)
    path = entry.first_part(local_dir)
    setup = []
    if path is None:
        folder = "/".join(p for p in (local_dir.rstrip("/"), entry.folder) if p)
        setup = [f"{GGUF_VARIABLE}=\"$(ls {shlex.quote(folder)}/{entry.first_part_name}*.gguf)\"   # the first of the "
                 f"parts `{unsloth_download_command(quant, local_dir)}` brought"]
        path = f"${GGUF_VARIABLE}"
    command = llama_cpp_command(path, setup=setup, **options)
    command.needs.append(f"the file: {unsloth_download_command(quant, local_dir)}")
    if entry.parts is None:
        command.notes.append(f"unsloth/grok-2-GGUF splits {quant} into parts named {entry.first_part_name}0000N.gguf; "
                             "the course has not recorded N, so the first line finds the first part after the download "
                             "and --model gets its exact name.")
    return command


def gguf_conversion_steps(model_path: str = "/local/grok-2", llama_cpp: str = "~/llama.cpp",
                          quant: str = "Q4_K_M") -> list[str]:
    """Shell steps from the released Grok 2.5 to a quantized GGUF (facts 2.1, 2.2, 5.3). Ready-made files exist:
    `helpers.gguf.unsloth_download_command(quant)` fetches one of unsloth/grok-2-GGUF's instead."""
    m = model_path.rstrip("/")
    return [
        f"cd {m} && for f in pytorch_model-*.safetensors; do mv \"$f\" \"${{f/pytorch_model/model}}\"; done"
        "   # the converter globs model-*.safetensors",
        f"hf download alvarobartt/grok-2-tokenizer tokenizer.json chat_template.jinja --local-dir {m}"
        "   # the converter refuses to run without them",
        f"python {llama_cpp}/convert_hf_to_gguf.py {m} --outtype bf16 --outfile {m}/grok-2-bf16.gguf"
        "   # ~539 GB; stitches the 8 expert slices",
        f"{llama_cpp}/build/bin/llama-quantize {m}/grok-2-bf16.gguf {m}/grok-2-{quant}.gguf {quant}",
    ]


def ask(base_url: str, model: str, question: str, *, max_tokens: int = 64, system: str | None = None,
        api_key: str = "not-needed", timeout: float = 120) -> str:
    """Lesson 06's client: one greedy chat question to any OpenAI-compatible server (helpers.serve, SGLang, vLLM,
    llama-server) through the official `openai` package. Only `base_url` and `model` change between engines."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    return reply.choices[0].message.content or ""


# ============================================================================= checking commands against the engines


@dataclass
class EngineCheck:
    """What the engine release a command names says about it, read in that release's own files."""

    engine: str
    version: str
    checked_with: str  # the files read ("vllm 0.24.0 (vllm-0.24.0-...whl)"), or why nothing was read
    ok: bool | None  # None: the release's files are not in the cache, so nothing was checked
    serves_grok2: str = ""  # evidence, from the model registry
    tokenizer: str = ""  # evidence: tokenizer.tok.json support
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. an option accepted only as an abbreviation


def check_command(command: EngineCommand, download: bool = False) -> EngineCheck:
    """Check `command` against the files of the engine release it names (see the module docstring).

    The wheels (sdist for llama.cpp) come from the cache of `helpers.engine_sources`; with `download=True` a missing
    one is fetched from PyPI (39 MB for SGLang's wheel, 279 MB for vLLM's, 77 MB for llama-cpp-python's sdist).
    Without them `ok` is None."""
    from . import engine_files
    from .engine_sources import release_files

    files = release_files(command.engine, download=download)
    if files is None:
        return EngineCheck(command.engine, command.version, "not checked: the release's files are not cached "
                           "(python -m helpers.engine_sources fetch)", None)
    problems = []
    registry = engine_files.served(files)
    tokenizer = engine_files.reads_tok_json(files)
    if not registry.ok:
        problems.append(f"{command.engine} {command.version} does not serve {engine_files.ARCHITECTURE}: "
                        f"{registry.evidence}")
    if not tokenizer.ok:
        problems.append(f"tokenizer: {tokenizer.evidence}")
    argv = list(command.options)
    if command.engine == "vllm" and argv and not argv[0].startswith("-"):
        argv = argv[1:]  # `vllm serve MODEL`: the positional model tag
    option_problems, notes = engine_files.check_options(argv, engine_files.options(files))
    return EngineCheck(command.engine, command.version, files.label, not problems and not option_problems,
                       registry.evidence, tokenizer.evidence, problems + option_problems, notes)
