"""How big a GGUF file of Grok 2 is, per quantization type: computed from the tensor list, not typed.

A llama.cpp "quantization type" such as Q4_K_M is a *mix*: `llama-quantize` picks a ggml type per tensor (more bits
for the attention values, the output head, some layers' down projections) by rules written in its
`src/llama-quant.cpp`. This module applies those rules, as the llama.cpp vendored in the course's pinned
llama-cpp-python has them (`helpers.engine_sources`), to every tensor of the model built on the meta device, and
prices each tensor with ggml's block sizes (`gguf.GGML_QUANT_SIZES`: bytes per block of N weights).

    size = gguf_size(helpers.load_config(helpers.GROK2_RELEASED_CONFIG), "Q4_K_M")
    size.total_bytes, size.bytes_by_class["experts"], size.bits_per_weight, size.exact, size.note

What is approximated is said in `note` and `exact`:
- unsloth's dynamic mixes ("UD-..." in `unsloth/grok-2-GGUF`) choose types per tensor from their own calibration
  runs, not from a rule anyone can apply: each is priced as llama.cpp's own mix of the same base type, `exact=False`;
- the IQ types assume an importance matrix was used (llama-quantize refuses IQ1/IQ2/IQ3_XXS without one; unsloth's
  files are imatrix quants). `imatrix=False` gives the rules without one;
- the vocabulary in the header (token strings, merges, chat template) is counted only when a tokenizer is given:
  for Grok 2.5 the rest of the file is hundreds of gigabytes, so it changes nothing that matters.
"""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CourseError
from ..model_parts import TENSOR_CLASSES

# Classes of tensors, as the machine planner places them (GPU, RAM) and prices them per decoded token: the course's one
# list (helpers.model_parts.TENSOR_CLASSES).
CLASSES = tuple(TENSOR_CLASSES)
ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT: every tensor's data starts at a multiple of 32 bytes
QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION, which llama-quantize writes into every file it makes


@dataclass(frozen=True)
class Mix:
    """A llama-quantize file type: the ggml type most tensors get, and whether the IQ rules assume an imatrix."""

    ftype: str  # llama-quantize's name (LLAMA_FTYPE_MOSTLY_<ftype>)
    default: str  # llama_ftype_get_default_type
    imatrix: bool = False


MIXES = {
    "Q2_K": Mix("Q2_K", "Q2_K"), "Q3_K_S": Mix("Q3_K_S", "Q3_K"), "Q3_K_M": Mix("Q3_K_M", "Q3_K"),
    "Q3_K_L": Mix("Q3_K_L", "Q3_K"), "Q4_0": Mix("Q4_0", "Q4_0"), "Q4_K_S": Mix("Q4_K_S", "Q4_K"),
    "Q4_K_M": Mix("Q4_K_M", "Q4_K"), "Q5_K_S": Mix("Q5_K_S", "Q5_K"), "Q5_K_M": Mix("Q5_K_M", "Q5_K"),
    "Q6_K": Mix("Q6_K", "Q6_K"), "Q8_0": Mix("Q8_0", "Q8_0"), "BF16": Mix("BF16", "BF16"), "F16": Mix("F16", "F16"),
    "TQ1_0": Mix("TQ1_0", "TQ1_0"), "IQ1_S": Mix("IQ1_S", "IQ1_S", True), "IQ1_M": Mix("IQ1_M", "IQ1_M", True),
    "IQ2_XXS": Mix("IQ2_XXS", "IQ2_XXS", True), "IQ2_M": Mix("IQ2_M", "IQ2_S", True),
    "IQ3_XXS": Mix("IQ3_XXS", "IQ3_XXS", True), "IQ3_M": Mix("IQ3_M", "IQ3_S", True),
    "IQ4_XS": Mix("IQ4_XS", "IQ4_XS", True),
}
# unsloth's dynamic ("UD") mixes of Grok 2, and the llama.cpp mix each is priced as.
UNSLOTH_DYNAMIC = {"UD-IQ3_XXS": "IQ3_XXS", "UD-Q2_K_XL": "Q2_K", "UD-Q3_K_XL": "Q3_K_M", "UD-Q4_K_XL": "Q4_K_M",
                   "UD-Q5_K_XL": "Q5_K_M"}
UNSLOTH_REPO = "unsloth/grok-2-GGUF"
UNSLOTH_TREE = "https://huggingface.co/unsloth/grok-2-GGUF/tree/main"


@dataclass(frozen=True)
class UnslothFile:
    """Where one quantization of unsloth/grok-2-GGUF lies in that repository, and what the course knows of it.

    `parts`: 1 for a single file; for a type split into numbered parts (`<stem>-00001-of-0000N.gguf`, the layout of
    llama.cpp's gguf-split, which llama-server opens from its first part), the number of parts, or None where the
    course has not recorded it. `dynamic`: the file is one of unsloth's calibrated mixes, whatever its name says, so
    its size is known only approximately (`published_bytes`: the size unsloth lists, where the course recorded it)."""

    quant: str
    folder: str  # "" for a file at the repository's root
    stem: str  # the file name without its part suffix and ".gguf"
    parts: int | None
    dynamic: bool
    published_bytes: int | None = None
    source: str = UNSLOTH_TREE

    @property
    def include(self) -> str:
        """The `hf download --include` pattern that fetches this quantization and nothing else."""
        return f"{self.folder}/*" if self.folder else f"{self.stem}.gguf"

    def first_part(self, local_dir: str = "grok-2-GGUF") -> str | None:
        """The path llama.cpp's --model takes after `hf download --local-dir local_dir`: the file, or the first of its
        parts. None where the number of parts is not recorded (the name ends `-00001-of-<parts>.gguf`; see
        `first_part_name`)."""
        where = "/".join(p for p in (local_dir.rstrip("/"), self.folder) if p)
        if self.parts == 1:
            return f"{where}/{self.stem}.gguf"
        if self.parts is None:
            return None
        return f"{where}/{self.stem}-00001-of-{self.parts:05d}.gguf"

    @property
    def first_part_name(self) -> str:
        """How the first (or only) file's name begins: `<stem>-00001-of-` for a split type, whose count follows."""
        return f"{self.stem}.gguf" if self.parts == 1 else f"{self.stem}-00001-of-"


# unsloth/grok-2-GGUF's file list (facts 5.1; https://huggingface.co/unsloth/grok-2-GGUF/tree/main): TQ1_0 is one file
# at the root named grok-2-UD-TQ1_0.gguf, a dynamic mix despite its name; every other type is a folder named after it,
# holding `grok-2-<type>-0000k-of-0000N.gguf` parts. The course has not recorded how many parts each folder holds, so
# `parts` is None there and a command names the first part by how its name begins (helpers.machines says so).
UNSLOTH_FILES = {
    "TQ1_0": UnslothFile("TQ1_0", "", "grok-2-UD-TQ1_0", 1, dynamic=True),
    **{quant: UnslothFile(quant, quant, f"grok-2-{quant}", None, dynamic=quant in UNSLOTH_DYNAMIC)
       for quant in ("IQ1_S", "UD-IQ3_XXS", "UD-Q2_K_XL", "UD-Q3_K_XL", "IQ4_XS", "UD-Q4_K_XL", "UD-Q5_K_XL")},
}
# What unsloth/grok-2-GGUF offers (facts 5.1, its file list), in the order it lists them.
UNSLOTH_GROK2_QUANTS = ("TQ1_0", "IQ1_S", "UD-IQ3_XXS", "UD-Q2_K_XL", "UD-Q3_K_XL", "IQ4_XS", "UD-Q4_K_XL",
                        "UD-Q5_K_XL")
assert set(UNSLOTH_FILES) == set(UNSLOTH_GROK2_QUANTS)
_UNSLOTH_FILE_NOTES = {"TQ1_0": "unsloth's file of this name (grok-2-UD-TQ1_0.gguf) is one of its dynamic mixes, "
                                "so its size differs from llama.cpp's TQ1_0 mix priced here"}
GGUF_QUANTS = tuple(MIXES) + tuple(UNSLOTH_DYNAMIC)


@dataclass(frozen=True)
class GgufSize:
    quant: str
    total_bytes: int  # the whole file: header, then every tensor padded to 32 bytes
    bytes_by_class: dict[str, int]  # tensor data per class (CLASSES), without the header
    bits_per_weight: float  # tensor data bits / weights
    exact: bool  # True: llama.cpp's own rules for this type, applied tensor by tensor
    note: str
    header_bytes: int = 0
    tensor_types: dict[str, str] = field(default_factory=dict, repr=False)  # GGUF tensor name -> ggml type

    @property
    def weights(self) -> int:
        return sum(self.bytes_by_class.values())


def _block(ggml_type: str) -> tuple[int, int]:
    import gguf

    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]


def tensor_bytes(ggml_type: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of ggml shape `shape` (fastest dimension first) stored as `ggml_type`."""
    block, size = _block(ggml_type)
    rows = 1
    for dim in shape[1:]:
        rows *= dim
    return rows * (shape[0] // block) * size


def tensor_class(name: str) -> str:
    if name == "token_embd.weight":
        return "embeddings"
    if name == "output.weight":
        return "lm_head"
    if name.endswith("_norm.weight"):
        return "norms"
    if ".ffn_gate_inp." in name:
        return "router"
    if "_exps." in name:
        return "experts"
    if ".attn_" in name:
        return "attention"
    if ".ffn_" in name:
        return "dense_mlp"
    raise ValueError(f"no class for GGUF tensor {name}")


# ------------------------------------------------------------------------------------------ llama.cpp's rules
#
# The order and the conditions below follow `llama_tensor_get_type_impl` and its callers in the pinned llama.cpp's
# `src/llama-quant.cpp`, restricted to what a Grok model can reach (architecture `grok`: not Falcon, never the "70B"
# model type; no fused QKV; an output head of its own).

_CATEGORIES = (("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
               ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
               ("ffn_down", "ffn_down"))
_VERY_LOW = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M"}  # the 1-2 bit IQ mixes share one branch
_HEAD_Q5_K = _VERY_LOW | {"IQ3_XXS"}
_MOE8_ATTN_OUTPUT_Q5_K = {"Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                          "IQ3_M", "IQ4_XS"}
# When a row length is not a multiple of the chosen type's block, llama-quantize falls back to a 32-wide block type.
_FALLBACK = {**dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
             **dict.fromkeys(("Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"), "Q4_K": "Q5_0", "Q5_K": "Q5_1",
             "Q6_K": "Q8_0"}
_QUANTIZED_DEFAULT = {"BF16": False, "F16": False, "F32": False}


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    return next((category for key, category in _CATEGORIES if key in name), "other")


def _more_bits(i: int, n: int) -> bool:  # the layers a mix treats better: first and last eighth, every third between
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _may_quantize(name: str, shape: tuple[int, ...]) -> bool:
    # 1D tensors, norms and the router (ffn_gate_inp) keep the type they came with (the converter writes them in F32).
    return len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name and "ffn_gate_inp" not in name


class _Rules:
    def __init__(self, mix: Mix, n_layer: int, n_expert: int, n_gqa: int, n_attention_v: int, imatrix: bool):
        self.mix, self.n_layer, self.n_expert, self.n_gqa = mix, n_layer, n_expert, n_gqa
        self.imatrix = imatrix
        self.n_attention_v, self.i_attention_v, self.i_ffn_down = n_attention_v, 0, 0

    def pick(self, name: str, shape: tuple[int, ...]) -> str:
        ftype, new = self.mix.ftype, self.mix.default
        category = _category(name)
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        n, moe8, gqa4 = self.n_layer, self.n_expert == 8, self.n_gqa >= 4
        if category == "output":
            if shape[0] % _block(new)[0]:
                new = "Q8_0"
            elif ftype in _HEAD_Q5_K:
                new = "Q5_K"
            elif new != "Q8_0":
                new = "Q6_K"
        elif category == "token_embd":
            new = {"IQ2_XXS": "Q2_K", "IQ2_XS": "Q2_K", "IQ1_S": "Q2_K", "IQ1_M": "Q2_K", "IQ2_S": "IQ3_S",
                   "IQ2_M": "IQ3_S", "IQ3_XXS": "IQ3_S", "TQ1_0": "Q4_K", "TQ2_0": "Q4_K"}.get(ftype, new)
        elif ftype in _VERY_LOW:
            low = "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
            if category == "attn_v":
                new = "Q4_K" if gqa4 or self.n_expert >= 4 else low
                self.i_attention_v += 1
            elif moe8 and category == "attn_k":
                new = "Q4_K"
            elif category == "ffn_down":
                if self.i_ffn_down < n // 8:  # a running count over every ffn_down tensor, dense and experts
                    new = low
                self.i_ffn_down += 1
            elif category == "attn_output":
                if moe8:
                    new = "Q5_K"
                elif ftype in ("IQ1_S", "IQ1_M"):
                    new = "IQ2_XXS"
                elif ftype in ("IQ2_S", "IQ2_M"):
                    new = "IQ3_S"
        elif category == "attn_v":
            i = self.i_attention_v
            if ftype == "Q2_K":
                new = "Q4_K" if gqa4 else "Q3_K"
            elif ftype == "IQ3_XXS":
                new = "Q4_K" if gqa4 else ("IQ3_XXS" if self.imatrix else "IQ3_S")
            elif ftype == "IQ3_M":
                new = "Q4_K"
            elif ftype == "Q3_K_M":
                new = "Q5_K" if i < 2 else "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
            elif ftype in ("IQ4_NL", "IQ4_XS") and gqa4:
                new = "Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and _more_bits(i, self.n_attention_v):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and i < 4:
                new = "Q5_K"
            if moe8:
                new = "Q8_0"  # llama.cpp: "for the 8-expert model, bumping this to Q8_0 trades just ~128MB"
            self.i_attention_v += 1
        elif category == "attn_k":
            if moe8:
                new = "Q8_0"
            elif ftype == "IQ3_XXS":
                new = "IQ2_S"
        elif category == "attn_q":
            if ftype == "IQ3_XXS":
                new = "IQ2_S"
        elif category == "ffn_down":  # with experts, the layer is read from the name
            if ftype == "Q2_K":
                new = "Q3_K"
            elif ftype == "IQ3_XXS" and not self.imatrix:
                new = "Q4_K" if layer < n // 8 else "Q3_K"
            elif ftype == "Q3_K_M":
                new = "Q5_K" if layer < n // 16 else "Q4_K"
            elif ftype == "IQ3_M" and (layer < n // 8 or (moe8 and _more_bits(layer, n))):
                new = "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
            elif ftype == "Q4_K_M":
                if _more_bits(layer, n):
                    new = "Q6_K"
            elif layer < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not self.imatrix:
                new = "Q5_K"
            elif ftype == "Q5_K_M" and _more_bits(layer, n):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and layer < n // 8:
                new = "Q5_K"
            elif ftype in ("Q4_0", "Q5_0") and self.imatrix and layer < n // 8:
                new = "Q4_1" if ftype == "Q4_0" else "Q5_1"
        elif category == "attn_output":
            if moe8:
                if ftype in _MOE8_ATTN_OUTPUT_Q5_K:
                    new = "Q5_K"
            else:
                new = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K",
                       "IQ3_M": "Q4_K"}.get(ftype, new)
        return new

    def fallback(self, ggml_type: str, row: int) -> str:
        block = _block(ggml_type)[0]
        if row % block == 0:
            return ggml_type
        ggml_type = _FALLBACK.get(ggml_type, ggml_type if block <= 32 else "F16")
        return ggml_type if row % _block(ggml_type)[0] == 0 else "F16"


def llama_cpp_types(tensors: dict[str, tuple[int, ...]], source_types: dict[str, str], mix: Mix, config,
                    imatrix: bool | None = None) -> dict[str, str]:
    """The ggml type llama-quantize gives each tensor of a Grok GGUF for `mix` (tensors in ggml shapes)."""
    # llama-quantize visits the tensors in its loader's order: those outside any block first, then block by block,
    # by name within a block. Two of the rules count tensors as they go, so the order matters.
    def order(name: str) -> tuple[int, str]:
        return (int(name.split(".")[1]) if name.startswith("blk.") else -1, name)

    names = sorted(tensors, key=order)
    rules = _Rules(mix, config.num_hidden_layers, config.num_local_experts,
                   config.num_attention_heads // config.num_key_value_heads,
                   sum(_category(n) == "attn_v" for n in names), mix.imatrix if imatrix is None else imatrix)
    quantized_default = _QUANTIZED_DEFAULT.get(mix.default, True)
    types = {}
    for name in names:
        shape = tensors[name]
        if not _may_quantize(name, shape):
            types[name] = source_types[name]
        elif not quantized_default:
            types[name] = mix.default  # BF16 / F16 files: every weight matrix converted, no rules
        else:
            types[name] = rules.fallback(rules.pick(name, shape), shape[0])
    return types


# ------------------------------------------------------------------------------------------------- sizes


def _config(config):
    if isinstance(config, (str, Path)):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(config))
    return config


@functools.lru_cache(maxsize=8)
def _tensor_list(config_json: str) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    """(GGUF name, ggml shape, type the converter writes) for every tensor of the model, built on the meta device."""
    import torch

    from ..grok2 import Grok2Config, Grok2ForCausalLM
    from .export import gguf_tensor_layout

    config = Grok2Config(**json.loads(config_json))
    with torch.device("meta"):
        model = Grok2ForCausalLM(config)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return tuple((name, shape, kind) for name, (shape, kind) in gguf_tensor_layout(shapes, config).items())


def _header_bytes(config, tensors: dict[str, tuple[int, ...]], types: dict[str, str], mix: Mix, tokenizer) -> int:
    """The header llama-quantize writes: the converter's metadata (vocabulary only when a tokenizer is given), plus
    the file type and quantization version, then one entry per tensor; padded to the 32-byte alignment."""
    import gguf

    from .export import write_metadata

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "header.gguf"
        writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GROK])
        write_metadata(writer, config, tokenizer, file_type=gguf.LlamaFileType[f"MOSTLY_{mix.ftype}"])
        writer.add_quantization_version(QUANTIZATION_VERSION)
        for name, shape in tensors.items():
            kind = gguf.GGMLQuantizationType[types[name]]
            writer.add_tensor_info(name, tuple(reversed(shape)), gguf.np.float32, tensor_bytes(types[name], shape),
                                   raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        size = path.stat().st_size
    return -(-size // ALIGNMENT) * ALIGNMENT


def gguf_size(config, quant: str, *, tokenizer=None, imatrix: bool | None = None) -> GgufSize:
    """The size of a GGUF of this Grok 2 config (a config object or a config.json path) at quantization `quant`.

    `quant`: one of GGUF_QUANTS. `tokenizer`: count the vocabulary in the header too (the tiny model's test gives
    it; Grok 2.5's is left out). `imatrix`: override whether an importance matrix is assumed (default: the IQ types
    assume one, the others do not; it changes the rule for a few tensors)."""
    if quant not in GGUF_QUANTS:
        raise CourseError(f"Unknown GGUF quantization {quant!r}.", f"use one of {', '.join(GGUF_QUANTS)}")
    config = _config(config)
    if "Grok1ForCausalLM" not in (getattr(config, "architectures", None) or []):
        raise CourseError("gguf_size prices Grok 2 configs only.", "pass the released config "
                          "(helpers.GROK2_RELEASED_CONFIG) or the tiny model's")
    base = UNSLOTH_DYNAMIC.get(quant, quant)
    mix = MIXES[base]
    listing = _tensor_list(config.to_json_string(use_diff=False))
    tensors = {name: shape for name, shape, _ in listing}
    types = llama_cpp_types(tensors, {name: kind for name, _, kind in listing}, mix, config, imatrix)
    by_class = dict.fromkeys(CLASSES, 0)
    data = 0
    for name, shape in tensors.items():
        nbytes = tensor_bytes(types[name], shape)
        by_class[tensor_class(name)] += nbytes
        data += -(-nbytes // ALIGNMENT) * ALIGNMENT
    header = _header_bytes(config, tensors, types, mix, tokenizer)
    weights = sum(_numel(shape) for shape in tensors.values())
    notes = [f"llama.cpp's {base} rules (llama-quant.cpp), tensor by tensor"]
    if quant in UNSLOTH_DYNAMIC:
        notes = [f"approximated: unsloth's dynamic mix {quant} picks each tensor's type from calibration runs, not by "
                 f"a rule; priced here as llama.cpp's own {base} mix (the XL mixes keep more tensors at higher "
                 "precision, so the real files are larger)"]
    if quant in _UNSLOTH_FILE_NOTES:
        notes.append(_UNSLOTH_FILE_NOTES[quant])
    if mix.imatrix and (imatrix is None or imatrix):
        notes.append("importance matrix assumed (as in unsloth's files)")
    if tokenizer is None:
        notes.append("header without the vocabulary (token strings, merges, chat template)")
    return GgufSize(quant=quant, total_bytes=header + data, bytes_by_class=by_class,
                    bits_per_weight=8 * sum(by_class.values()) / weights, exact=quant not in UNSLOTH_DYNAMIC,
                    note="; ".join(notes), header_bytes=header, tensor_types=types)


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def unsloth_file(quant: str) -> UnslothFile:
    """unsloth/grok-2-GGUF's file(s) for `quant` (one of UNSLOTH_GROK2_QUANTS)."""
    if quant not in UNSLOTH_FILES:
        raise CourseError(f"unsloth/grok-2-GGUF has no {quant!r} files.", f"use one of {', '.join(UNSLOTH_GROK2_QUANTS)}")
    return UNSLOTH_FILES[quant]


def unsloth_download_command(quant: str, local_dir: str = "grok-2-GGUF") -> str:
    """The `hf download` that fetches one quantization of unsloth/grok-2-GGUF (its file, or its folder of parts)."""
    return f'hf download {UNSLOTH_REPO} --include "{unsloth_file(quant).include}" --local-dir {local_dir}'
