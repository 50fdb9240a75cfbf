"""The production engines for Grok 2.5, and GGUF for llama.cpp.

    deployment = plan_deployment(gpu_memory_gb=80, gpus=8)     # from the memory planner: how many GPUs, which TP
    print(sglang_command(deployment).shell())                   # the official path (facts 3.1)
    print(vllm_command(deployment).shell())                     # the vLLM equivalent
    check_arguments(sglang_command(deployment))                 # against the engine's own argument parser, if installed
    export_gguf("data/tiny-grok-2", "workspace/tiny-grok-2-f32.gguf"); verify_gguf(...)

Every command binds 127.0.0.1 and serves the same OpenAI-compatible API as `helpers.serve`, so the client code of
lesson 06 works against any of them: only `base_url` and `model` change.

Facts used here (shared/reference/grok2-facts.md): the official command (3.1); the released checkpoint is pre-sharded
for tensor parallelism 8, so SGLang must run it at TP = 8 (3.2); vLLM support and its tokenizer note (3.3); llama.cpp's
Grok converter and its differences from the reference (2.1, 4.6); GGUF size estimates (5.1).
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CourseError
from .units import GB

# The released checkpoint's expert files are split for exactly 8 tensor-parallel ranks (facts 3.2).
RELEASED_TP = 8
SGLANG_DEFAULT_PORT = 30000
VLLM_DEFAULT_PORT = 8000
LLAMA_CPP_DEFAULT_PORT = 8080
LOCAL_HOST = "127.0.0.1"


# ============================================================================================ the hardware plan


@functools.lru_cache(maxsize=1)
def _grok2_plan():
    """The memory plan of the released Grok 2.5 config (shipped in data/; built on the meta device, once)."""
    from .profiles import plan_profile

    return plan_profile("grok-2")


@dataclass(frozen=True)
class Deployment:
    """How Grok 2.5 is laid out on a GPU node, from the memory planner (helpers.memory)."""

    gpus: int  # GPUs on the node
    gpu_memory_gb: float
    precision: str  # weight precision in GPU memory ("fp8": SGLang/vLLM quantize the bf16 checkpoint while loading)
    context_tokens: int
    gpus_needed: int  # by memory alone (weights + KV cache of one context, 90% of each GPU usable)
    tensor_parallel: int  # what the engine runs with
    weights_gb: float
    weights_per_gpu_gb: float
    kv_cache_gb: float
    disk_gb: float  # the released bf16 checkpoint on disk
    notes: tuple[str, ...] = ()

    def requirements(self) -> list[str]:
        return [
            f"{self.tensor_parallel} GPUs with more than {self.weights_per_gpu_gb:.0f} GB each for the weights "
            f"({self.precision}: {self.weights_gb:.0f} GB in all) plus room for the KV cache "
            f"({self.kv_cache_gb:.1f} GB per {self.context_tokens}-token sequence)",
            f"{self.disk_gb:.0f} GB of disk for the checkpoint (bf16, as released), more for converted copies",
            "the tokenizer: tokenizer.tok.json (needs the tiktoken package) or alvarobartt/grok-2-tokenizer",
        ]


def plan_deployment(gpu_memory_gb: float = 80, gpus: int = 8, precision: str = "fp8", context_tokens: int = 8192,
                    released_layout: bool = True) -> Deployment:
    """Decide the tensor-parallel size for Grok 2.5 on `gpus` GPUs of `gpu_memory_gb` from its real config.

    With the released (pre-sharded) files the answer is always 8 (SGLang's loader reads exactly 8 expert slices);
    with a converted checkpoint (helpers.grok2.convert_released_checkpoint) it is the smallest power of two that holds
    the weights and one context's KV cache.
    """
    plan = _grok2_plan()
    needed = plan.gpus_needed(gpu_memory_gb * GB, precision, context_tokens)
    by_memory = plan.tensor_parallel_size(needed)
    notes = []
    if released_layout:
        if by_memory > RELEASED_TP:
            raise CourseError(
                f"Grok 2.5 in {precision} needs about {needed} GPUs of {gpu_memory_gb:g} GB; the released checkpoint "
                f"runs at tensor parallelism {RELEASED_TP} only.",
                "Use GPUs with more memory (8 x > 40 GB for FP8), or re-package the checkpoint for TP 16 "
                "(as huihui-ai/grok-2 does for 16 Ascend NPUs).",
            )
        tp = RELEASED_TP
        if by_memory < RELEASED_TP:
            notes.append(f"Memory alone would allow TP {by_memory}, but the released expert files are split in "
                         f"{RELEASED_TP}: SGLang at TP {by_memory} would find the wrong slices. "
                         f"TP stays {RELEASED_TP}.")
    else:
        tp = by_memory
        notes.append("A converted checkpoint (ordinary shards) lets the engine choose any TP that divides the heads.")
    if gpus < tp:
        raise CourseError(f"This plan needs {tp} GPUs and the node has {gpus}.",
                          f"Use a node with {tp} GPUs of > {plan.weight_bytes(precision) / GB / tp:.0f} GB, "
                          "or a GGUF quantization with llama.cpp on a large-memory machine (see lesson 06).")
    weights = plan.weight_bytes(precision)
    return Deployment(gpus=gpus, gpu_memory_gb=gpu_memory_gb, precision=precision, context_tokens=context_tokens,
                      gpus_needed=needed, tensor_parallel=tp, weights_gb=weights / GB,
                      weights_per_gpu_gb=weights / GB / tp,
                      kv_cache_gb=plan.kv_cache_bytes(context_tokens) / GB, disk_gb=plan.weight_bytes("bf16") / GB,
                      notes=tuple(notes))


# ================================================================================================== commands


@dataclass
class EngineCommand:
    """A server command line, what it needs, and where its OpenAI-compatible API will be."""

    engine: str
    argv: list[str]
    port: int
    host: str = LOCAL_HOST
    needs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parser_argv_start: int = 0  # where the engine's own options begin in argv (after the program / module name)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def options(self) -> list[str]:
        return self.argv[self.parser_argv_start:]

    def shell(self) -> str:
        """The command, one option per line, ready to paste into a terminal."""
        head = shlex.join(self.argv[: self.parser_argv_start])
        lines, options = [head], self.options
        i = 0
        while i < len(options):
            if i + 1 < len(options) and not options[i + 1].startswith("-"):
                lines.append(shlex.join(options[i: i + 2]))
                i += 2
            else:
                lines.append(shlex.quote(options[i]))
                i += 1
        return " \\\n    ".join(lines)

    def __str__(self) -> str:
        return self.shell()


def _lora_pairs(adapters: dict[str, str] | None) -> list[str]:
    return [f"{name}={path}" for name, path in (adapters or {}).items()]


def sglang_command(deployment: Deployment | None = None, model_path: str = "/local/grok-2",
                   tokenizer_path: str | None = None, *, host: str = LOCAL_HOST, port: int = SGLANG_DEFAULT_PORT,
                   served_model_name: str = "grok-2", adapters: dict[str, str] | None = None,
                   api_key_placeholder: str | None = None, context_length: int | None = None) -> EngineCommand:
    """The official SGLang command of the model card (facts 3.1), with the TP from the plan and a local bind."""
    deployment = deployment or plan_deployment()
    argv = ["python3", "-m", "sglang.launch_server",
            "--model", model_path,
            "--tokenizer-path", tokenizer_path or f"{model_path.rstrip('/')}/tokenizer.tok.json",
            "--tp", str(deployment.tensor_parallel),
            "--quantization", deployment.precision,
            "--attention-backend", "triton",
            "--host", host, "--port", str(port),
            "--served-model-name", served_model_name]
    if context_length:
        argv += ["--context-length", str(context_length)]
    if api_key_placeholder:
        argv += ["--api-key", api_key_placeholder]
    if adapters:
        argv += ["--enable-lora", "--lora-paths", *_lora_pairs(adapters)]
    needs = ["SGLang >= 0.5.1 (`pip install sglang`), CUDA GPUs", *deployment.requirements()]
    notes = ["--quantization fp8 converts the bf16 weights to FP8 while loading: half the memory (~34 GB per GPU).",
             "--attention-backend triton: SGLang's Triton kernels implement Grok 2's attention cap and its length "
             "temperature.",
             *deployment.notes]
    return EngineCommand("sglang", argv, port, host, needs, notes, parser_argv_start=3)


def vllm_command(deployment: Deployment | None = None, model_path: str = "/local/grok-2", *, host: str = LOCAL_HOST,
                 port: int = VLLM_DEFAULT_PORT, served_model_name: str = "grok-2",
                 adapters: dict[str, str] | None = None, max_lora_rank: int = 16,
                 api_key_placeholder: str | None = None, max_model_len: int | None = 8192) -> EngineCommand:
    """The vLLM equivalent (facts 3.3). vLLM reads tokenizer.tok.json itself (tokenizer mode `grok2`, needs
    tiktoken)."""
    deployment = deployment or plan_deployment()
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
    needs = ["vLLM with Grok 2 support (PR #31847, 2026) and tiktoken, CUDA GPUs", *deployment.requirements()]
    notes = ["vLLM's loader was not verified on the released pre-sharded expert files (its only Grok 2 test uses "
             "dummy weights): convert them first with helpers.grok2.convert_released_checkpoint(src, dst) and serve "
             "dst (same tensor names, whole experts).",
             "vLLM does not implement Grok 2's attention temperature and caps logits before the 0.5 scale "
             "(facts 4.6): answers can differ slightly from SGLang's.",
             *deployment.notes]
    return EngineCommand("vllm", argv, port, host, needs, notes, parser_argv_start=2)


def llama_cpp_command(gguf_path: str, *, host: str = LOCAL_HOST, port: int = LLAMA_CPP_DEFAULT_PORT,
                      alias: str = "grok-2", context_size: int = 8192, gpu_layers: int | None = None,
                      threads: int | None = None, api_key_placeholder: str | None = None) -> EngineCommand:
    """llama.cpp's OpenAI-compatible `llama-server` for a GGUF file (chat template taken from the file, --jinja)."""
    argv = ["llama-server", "--model", gguf_path, "--host", host, "--port", str(port), "--alias", alias,
            "--ctx-size", str(context_size), "--jinja"]
    if gpu_layers is not None:
        argv += ["--n-gpu-layers", str(gpu_layers)]
    if threads:
        argv += ["--threads", str(threads)]
    if api_key_placeholder:
        argv += ["--api-key", api_key_placeholder]
    needs = ["llama.cpp built from source (or a release binary) with Grok 2 support (PR #15539, Aug 2025)",
             "RAM (or unified/GPU memory) for the GGUF file plus the KV cache: see gguf_size_table()"]
    notes = [f"llama.cpp differs from the reference (facts 4.6): {'; '.join(LLAMA_CPP_DIFFERENCES.values())}."]
    return EngineCommand("llama.cpp", argv, port, host, needs, notes, parser_argv_start=1)


def gguf_conversion_steps(model_path: str = "/local/grok-2", llama_cpp: str = "~/llama.cpp",
                          quant: str = "Q4_K_M") -> list[str]:
    """Shell steps from the released Grok 2.5 to a quantized GGUF (facts 2.1, 2.2, 5.3)."""
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


# ============================================================================= checking commands against the engines


# The flags this module emits, per engine, with where each was checked when the engine's own parser is not installed.
DOCUMENTED_FLAGS = {
    "sglang": {"--model": "facts 3.1", "--tokenizer-path": "facts 3.1", "--tp": "facts 3.1",
               "--quantization": "facts 3.1", "--attention-backend": "facts 3.1", "--host": "sglang ServerArgs",
               "--port": "sglang ServerArgs", "--served-model-name": "sglang ServerArgs",
               "--context-length": "sglang ServerArgs", "--api-key": "sglang ServerArgs",
               "--enable-lora": "sglang ServerArgs", "--lora-paths": "sglang ServerArgs"},
    "vllm": {"--tensor-parallel-size": "vLLM docs", "--quantization": "vLLM docs", "--host": "vLLM docs",
             "--port": "vLLM docs", "--served-model-name": "vLLM docs", "--max-model-len": "vLLM docs",
             "--api-key": "vLLM docs", "--enable-lora": "vLLM docs", "--lora-modules": "vLLM docs",
             "--max-lora-rank": "vLLM docs"},
    "llama.cpp": {"--model": "common/arg.cpp", "--host": "common/arg.cpp", "--port": "common/arg.cpp",
                  "--alias": "common/arg.cpp", "--ctx-size": "common/arg.cpp", "--jinja": "common/arg.cpp",
                  "--n-gpu-layers": "common/arg.cpp", "--threads": "common/arg.cpp", "--api-key": "common/arg.cpp"},
}


@dataclass
class ArgumentCheck:
    engine: str
    checked_with: str  # "sglang 0.5.23 argument parser", or "documented flags"
    ok: bool
    problems: list[str]
    parsed: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. an option accepted only as an abbreviation of a longer one


def _sglang_parser():
    import argparse

    from sglang.srt.server_args import ServerArgs  # imports without a GPU; needs sglang's light dependencies

    parser = argparse.ArgumentParser(exit_on_error=False)  # as sglang.launch_server builds it (prefixes allowed)
    ServerArgs.add_cli_args(parser)
    import sglang

    return parser, f"sglang {getattr(sglang, '__version__', '?')} argument parser (ServerArgs.add_cli_args)"


def _vllm_parser():
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    import vllm

    parser = make_arg_parser(FlexibleArgumentParser(exit_on_error=False))
    return parser, f"vllm {getattr(vllm, '__version__', '?')} argument parser (make_arg_parser)"


def _llama_cpp_flags(source: str | Path) -> set[str]:
    import re

    text = (Path(source) / "common" / "arg.cpp").read_text(encoding="utf-8", errors="replace")
    return set(re.findall(r'"(--?[A-Za-z0-9][A-Za-z0-9-]*)"', text))


def check_arguments(command: EngineCommand, llama_cpp_source: str | Path | None = None) -> ArgumentCheck:
    """Parse the command's options with the engine's own argument parser when the engine is importable here (SGLang,
    vLLM) or its source is given (llama.cpp's common/arg.cpp); otherwise compare them with the documented flags."""
    import contextlib
    import io

    options = command.options
    if command.engine in ("sglang", "vllm"):
        try:
            parser, how = _sglang_parser() if command.engine == "sglang" else _vllm_parser()
        except Exception:  # noqa: BLE001 - not installed (the usual case on a laptop): fall back below
            parser = None
        if parser is not None:
            argv = list(options)
            if command.engine == "vllm" and argv and not argv[0].startswith("-"):
                argv = ["--model", argv[0], *argv[1:]]  # `vllm serve MODEL`: the positional is the --model option
            problems, parsed = [], {}
            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr):
                    namespace, unknown = parser.parse_known_args(argv)
                exact = parser._option_string_actions
                notes = []
                given = set()
                for option in (o for o in argv if o.startswith("--")):
                    if option in exact:
                        given.add(exact[option].dest)
                        continue
                    longer = sorted(o for o in exact if o.startswith(option))
                    if longer:  # argparse accepts an unambiguous prefix of a longer option
                        given.add(exact[longer[0]].dest)
                        notes.append(f"{option} is not an option of its own: argparse accepts it as an "
                                     f"abbreviation of {longer[0]}")
                parsed = {k: v for k, v in vars(namespace).items() if k in given}
                problems += [f"unknown option {u}" for u in unknown]
            except (SystemExit, Exception) as error:  # noqa: BLE001 - argparse reports by exiting
                problems.append(f"{type(error).__name__}: {error} {stderr.getvalue().strip()[-300:]}")
                notes = []
            return ArgumentCheck(command.engine, how, not problems, problems, parsed, notes)
    if command.engine == "llama.cpp" and llama_cpp_source is not None:
        known = _llama_cpp_flags(llama_cpp_source)
        problems = [f"unknown option {o}" for o in options if o.startswith("-") and o not in known]
        return ArgumentCheck(command.engine, "llama.cpp's option strings (common/arg.cpp)", not problems, problems)
    known = DOCUMENTED_FLAGS[command.engine]
    problems = [f"undocumented option {o}" for o in options if o.startswith("-") and o not in known]
    return ArgumentCheck(command.engine, "documented flags (engine not installed here)", not problems, problems)


# ======================================================================================================== GGUF

# llama.cpp's Grok graph versus the reference (SGLang), facts 4.6: what a GGUF user gets.
LLAMA_CPP_DIFFERENCES = {
    "rope": "RoPE: the converter turns rope_type 'original' into YaRN (factor 16), the reference uses plain RoPE",
    "temperature": "attention temperature for positions beyond attn_temperature_len: written to the file, not used "
                   "by the graph",
    "router_cap": "router logit soft-cap 30: written, not applied",
    "renormalise": "top-2 expert weights renormalised to sum to 1 (the reference keeps the raw softmax weights)",
}

# Typical bits per weight of llama.cpp's quantization mixes (derived; facts 5.1 uses the same numbers).
GGUF_BITS_PER_WEIGHT = {"Q2_K": 2.63, "Q3_K_M": 3.91, "Q4_K_M": 4.84, "Q5_K_M": 5.69, "Q6_K": 6.56, "Q8_0": 8.5,
                        "BF16": 16.0}


def gguf_size_table(parameters: float | None = None) -> list[dict]:
    """Estimated GGUF file sizes of Grok 2.5 per quantization type (facts 5.1: estimates, not measured files)."""
    if parameters is None:
        parameters = _grok2_plan().total_params
    rows = []
    for quant, bits in GGUF_BITS_PER_WEIGHT.items():
        size = parameters * bits / 8
        rows.append({"type": quant, "bits_per_weight": bits, "size_GB": round(size / GB),
                     "fits": _fits(size / GB)})
    return rows


def _fits(gb: float) -> str:
    options = [(96, "one 96 GB GPU / 128 GB Mac (tight)"), (192, "a 192 GB Mac Studio or 2-3 x 80 GB GPUs"),
               (256, "a 256 GB workstation (CPU, slow)"), (512, "a 512 GB server or Mac Studio")]
    for limit, where in options:
        if gb * 1.1 <= limit:  # 10% for the KV cache and buffers
            return where
    return "a multi-GPU node"


def _gguf():
    try:
        import gguf
    except ImportError as error:
        raise CourseError("The `gguf` package is not installed.", "pip install the course's pinned `gguf`.") from error
    return gguf


def export_gguf(model_or_folder, out_path: str | Path, tokenizer=None, dtype: str = "f32",
                name: str = "tiny Grok 2", rope_as_converter: bool = True) -> Path:
    """Write a Grok 2 model as a GGUF file for llama.cpp, as llama.cpp's own converter (GrokModel) would.

    Metadata, tensor names and layouts follow `convert_hf_to_gguf.py` / `src/models/grok.cpp`: architecture `grok`;
    experts stacked per layer into `blk.N.ffn_{gate,down,up}_exps` ([8, out, in]); norms in f32; the vocabulary as
    a GPT-2-style byte-level BPE with pre-tokenizer `grok-2` (the same split regex); the chat template embedded.

    `rope_as_converter=False` departs from the converter on one point: it writes plain RoPE (as SGLang reads
    `rope_type: "original"`) instead of YaRN, removing one of llama.cpp's differences from the reference.
    """
    import numpy as np
    import torch

    gguf = _gguf()
    if isinstance(model_or_folder, (str, Path)):
        from .loading import load_model, load_tokenizer

        model = load_model(str(model_or_folder), dtype="float32", verbose=False)
        tokenizer = tokenizer or load_tokenizer(str(model_or_folder))
    else:
        model = model_or_folder
    if tokenizer is None:
        raise CourseError("export_gguf needs the tokenizer.", "Pass tokenizer=... (or a model folder).")
    config = model.config
    if "Grok1ForCausalLM" not in (config.architectures or []) or not hasattr(config, "residual_moe"):
        raise CourseError("export_gguf writes Grok 2 models only.", "Pass a Grok 2 (tiny or released) model folder.")
    if config.num_attention_heads * config.head_dim != config.hidden_size:
        raise CourseError("llama.cpp's Grok graph needs num_attention_heads * head_dim == hidden_size.",
                          "This model's shape cannot be expressed in llama.cpp's grok architecture.")
    float_type = {"f32": np.float32, "f16": np.float16}[dtype]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GROK])

    # --- hyper-parameters (TextModel.set_gguf_parameters + GrokModel.set_gguf_parameters)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(config.rope_theta))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_expert_count(config.num_local_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping or 30.0))
    writer.add_router_logit_softcapping(float(config.router_logit_softcapping or 30.0))
    if config.final_logit_softcapping:
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    if config.rope_type == "yarn" or (config.rope_type == "original" and rope_as_converter):
        # what llama.cpp's converter does ("treat original as yarn")
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(config.scaling_factor))
        writer.add_rope_scaling_orig_ctx_len(int(config.original_max_position_embeddings))
        writer.add_rope_scaling_yarn_ext_factor(float(config.extrapolation_factor))
        writer.add_rope_scaling_yarn_attn_factor(float(config.attn_factor))
        writer.add_rope_scaling_yarn_beta_fast(float(config.beta_fast))
        writer.add_rope_scaling_yarn_beta_slow(float(config.beta_slow))
    if config.attn_temperature_len:
        writer.add_attn_temperature_length(int(config.attn_temperature_len))
    writer.add_attn_output_scale(config.head_dim ** -0.5)
    writer.add_embedding_scale(float(config.embedding_multiplier_scale))
    writer.add_logit_scale(float(config.output_multiplier_scale))

    # --- vocabulary (TextModel._set_vocab_gpt2)
    _write_vocab(writer, tokenizer, config.vocab_size, gguf)

    # --- tensors (GrokModel.modify_tensors: experts stacked; names through llama.cpp's tensor map)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GROK, config.num_hidden_layers)
    state = {k: v.detach().to(torch.float32).cpu() for k, v in model.state_dict().items()}
    experts = {}
    for key, tensor in state.items():
        if ".block_sparse_moe.experts." in key:
            experts[key] = tensor
            continue
        base = key.removesuffix(".weight")
        gguf_name = names.get_name(base)
        if gguf_name is None:
            raise CourseError(f"No llama.cpp name for tensor {key}.", "This is not a Grok 2 state dict.")
        array = tensor.numpy()
        writer.add_tensor(f"{gguf_name}.weight", array.astype(np.float32 if array.ndim == 1 else float_type))
    for layer in range(config.num_hidden_layers):
        for hf, llama_name in (("w1", "linear"), ("w2", "linear_1"), ("w3", "linear_v")):
            stacked = torch.stack([experts[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{hf}.weight"]
                                   for e in range(config.num_local_experts)])
            gguf_name = names.get_name(f"transformer.decoder_layer.{layer}.moe.{llama_name}")
            writer.add_tensor(f"{gguf_name}.weight", stacked.numpy().astype(float_type))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def _write_vocab(writer, tokenizer, vocab_size: int, gguf) -> None:
    import json

    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    specials = set(tokenizer.all_special_tokens) | {t for t in vocab if t.startswith("<|") and t.endswith("|>")}
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if token in specials else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("grok-2")  # llama.cpp's pre-tokenizer for Grok 2's split regex (same regex here)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    merges = backend["model"].get("merges", [])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           (("eos", tokenizer.eos_token), ("pad", tokenizer.pad_token), ("sep", "<|separator|>")) if token}
    if "eos" in ids:
        writer.add_eos_token_id(ids["eos"])
    if "pad" in ids:
        writer.add_pad_token_id(ids["pad"])
    if "sep" in ids and ids["sep"] != tokenizer.unk_token_id:
        writer.add_sep_token_id(ids["sep"])
        # <|separator|> ends a chat turn. Marked as end-of-turn, llama.cpp stops there as transformers does (with only
        # <|eos|> it would write the next "Human:" turn itself).
        writer.add_eot_token_id(ids["sep"])
    writer.add_add_bos_token(False)  # Grok 2 has no BOS
    template = getattr(tokenizer, "chat_template", None)
    if template:
        writer.add_chat_template(template)


def expected_gguf_tensors(config) -> dict[str, tuple[int, ...]]:
    """Every tensor llama.cpp's grok loader (`llama_model_grok::load_arch_tensors`) asks for, with its GGUF shape
    (ggml order: fastest dimension first)."""
    h, v, ff, ffe, n_exp = (config.hidden_size, config.vocab_size, config.intermediate_size,
                            config.moe_intermediate_size, config.num_local_experts)
    gqa = config.num_key_value_heads * config.head_dim
    shapes = {"token_embd.weight": (h, v), "output_norm.weight": (h,), "output.weight": (h, v)}
    for i in range(config.num_hidden_layers):
        b = f"blk.{i}."
        shapes.update({
            b + "attn_norm.weight": (h,), b + "attn_q.weight": (h, h), b + "attn_k.weight": (h, gqa),
            b + "attn_v.weight": (h, gqa), b + "attn_output.weight": (h, h), b + "attn_output_norm.weight": (h,),
            b + "ffn_norm.weight": (h,), b + "ffn_gate.weight": (h, ff), b + "ffn_down.weight": (ff, h),
            b + "ffn_up.weight": (h, ff), b + "ffn_gate_inp.weight": (h, n_exp),
            b + "ffn_gate_exps.weight": (h, ffe, n_exp), b + "ffn_down_exps.weight": (ffe, h, n_exp),
            b + "ffn_up_exps.weight": (h, ffe, n_exp), b + "post_ffw_norm.weight": (h,),
        })
    return shapes


def verify_gguf(path: str | Path, model=None, tokenizer=None) -> dict:
    """Read a GGUF back and check it against llama.cpp's grok loader and (optionally) the model it came from.

    Checks: architecture `grok`; every tensor the loader requires, with its shape, and nothing else; the hyper-
    parameters it reads; the vocabulary (ids of the control tokens, merges); and, given the model, that every tensor
    holds exactly the model's weights (experts un-stacked again).
    """
    import numpy as np

    gguf = _gguf()
    reader = gguf.GGUFReader(str(path))

    def field(key):
        f = reader.fields.get(key)
        if f is None:
            return None
        value = f.contents()
        return value

    arch = field("general.architecture")
    tensors = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    report = {"architecture": arch, "tensors": len(tensors), "file_bytes": Path(path).stat().st_size, "problems": []}
    problems = report["problems"]
    if arch != "grok":
        problems.append(f"architecture is {arch!r}, not 'grok'")
    if model is not None:
        config = model.config
        expected = expected_gguf_tensors(config)
        for name, shape in expected.items():
            if name not in tensors:
                problems.append(f"missing tensor {name}")
            elif tensors[name] != shape:
                problems.append(f"{name}: shape {tensors[name]}, llama.cpp expects {shape}")
        problems += [f"unexpected tensor {n}" for n in tensors if n not in expected]
        for key, want in {f"grok.block_count": config.num_hidden_layers, "grok.embedding_length": config.hidden_size,
                          "grok.expert_count": config.num_local_experts,
                          "grok.expert_used_count": config.num_experts_per_tok,
                          "grok.expert_feed_forward_length": config.moe_intermediate_size,
                          "grok.attention.head_count": config.num_attention_heads,
                          "grok.attention.head_count_kv": config.num_key_value_heads}.items():
            if field(key) != want:
                problems.append(f"{key} = {field(key)}, expected {want}")
        for key, want in {"grok.embedding_scale": config.embedding_multiplier_scale,
                          "grok.logit_scale": config.output_multiplier_scale,
                          "grok.final_logit_softcapping": config.final_logit_softcapping,
                          "grok.attn_logit_softcapping": config.attn_logit_softcapping,
                          "grok.router_logit_softcapping": config.router_logit_softcapping}.items():
            got = field(key)
            if got is None or abs(got - want) > 1e-4 * max(1.0, abs(want)):
                problems.append(f"{key} = {got}, expected {want}")
        # the weights themselves
        state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
        by_name = {t.name: t for t in reader.tensors}
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GROK, config.num_hidden_layers)
        checked = 0
        for key, array in state.items():
            if ".experts." in key:
                parts = key.split(".")
                layer, expert, which = int(parts[2]), int(parts[5]), parts[6]
                kind = {"w1": "ffn_gate_exps", "w2": "ffn_down_exps", "w3": "ffn_up_exps"}[which]
                data = np.asarray(by_name[f"blk.{layer}.{kind}.weight"].data)[expert]
            else:
                gguf_name = names.get_name(key.removesuffix(".weight")) + ".weight"
                data = np.asarray(by_name[gguf_name].data)
            if data.shape != array.shape or not np.allclose(data.astype(np.float32), array, atol=1e-3, rtol=1e-3):
                problems.append(f"{key}: values differ from the model's")
            checked += 1
        report["weights_checked"] = checked
    if tokenizer is not None:
        tokens = [bytes(t).decode("utf-8") for t in (reader.fields["tokenizer.ggml.tokens"].parts[i]
                                                     for i in reader.fields["tokenizer.ggml.tokens"].data)]
        report["vocab_size"] = len(tokens)
        for token in ("<|pad|>", "<|separator|>", "<|eos|>"):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if tokens[token_id] != token:
                problems.append(f"token {token_id} is {tokens[token_id]!r}, expected {token}")
        if field("tokenizer.ggml.pre") != "grok-2":
            problems.append(f"tokenizer.ggml.pre = {field('tokenizer.ggml.pre')!r}, expected 'grok-2'")
        if field("tokenizer.ggml.eos_token_id") != tokenizer.eos_token_id:
            problems.append("eos token id differs")
        report["chat_template"] = bool(field("tokenizer.chat_template"))
    report["ok"] = not problems
    return report
