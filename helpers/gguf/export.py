"""Grok 2 to GGUF, the way llama.cpp's own converter writes it, and the check of a GGUF against llama.cpp's loader.

    path = export_gguf(model, "workspace/tiny-grok-2-f32.gguf", tokenizer=tokenizer)
    report = verify_gguf(path, model, tokenizer)          # report["ok"], report["problems"]

Metadata, tensor names and layouts follow the converter of the pinned llama.cpp (`convert_hf_to_gguf.py`,
`conversion/grok.py`) and its loader (`src/models/grok.cpp`): architecture `grok`; the 8 experts of each layer stacked
into `blk.N.ffn_{gate,down,up}_exps` ([8, out, in]); norms and the router in F32; the vocabulary as a GPT-2-style
byte-level BPE with pre-tokenizer `grok-2`; the chat template embedded. `gguf_tensor_layout` is the one name and
shape mapping, shared with the size computation (`helpers.gguf.sizes`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import CourseError

EXPERT_PROJECTIONS = {"w1": ("linear", "ffn_gate_exps"), "w2": ("linear_1", "ffn_down_exps"),
                      "w3": ("linear_v", "ffn_up_exps")}  # checkpoint name -> (Grok-1 name in gguf's map, GGUF name)


def _gguf():
    try:
        import gguf
    except ImportError as error:
        raise CourseError("The `gguf` package is not installed.", "pip install the course's pinned `gguf`.") from error
    return gguf


def _forced_f32(gguf_name: str, ndim: int) -> bool:
    # The converter keeps 1D tensors, norms and the router (ffn_gate_inp) in F32, whatever --outtype says.
    return ndim <= 1 or gguf_name.endswith("_norm.weight") or ".ffn_gate_inp." in gguf_name


def gguf_tensor_layout(shapes: dict[str, tuple[int, ...]], config, weights_type: str = "BF16"
                       ) -> dict[str, tuple[tuple[int, ...], str]]:
    """GGUF name -> (ggml shape, fastest dimension first; ggml type the converter writes) for a Grok 2 state dict's
    names and shapes (`weights_type`: what the converter's --outtype gives the weight matrices)."""
    gguf = _gguf()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GROK, config.num_hidden_layers)
    layout = {}
    for key, shape in shapes.items():
        if ".block_sparse_moe.experts." in key:
            continue  # stacked below
        gguf_name = names.get_name(key.removesuffix(".weight"))
        if gguf_name is None:
            raise CourseError(f"No llama.cpp name for tensor {key}.", "This is not a Grok 2 state dict.")
        gguf_name += ".weight"
        layout[gguf_name] = (tuple(reversed(shape)), "F32" if _forced_f32(gguf_name, len(shape)) else weights_type)
    for layer in range(config.num_hidden_layers):
        for checkpoint_name, (grok1_name, _) in EXPERT_PROJECTIONS.items():
            out, inner = shapes[f"model.layers.{layer}.block_sparse_moe.experts.0.{checkpoint_name}.weight"]
            gguf_name = names.get_name(f"transformer.decoder_layer.{layer}.moe.{grok1_name}") + ".weight"
            layout[gguf_name] = ((inner, out, config.num_local_experts), weights_type)
    return layout


def write_metadata(writer, config, tokenizer=None, *, file_type=None, name: str = "Grok 2",
                   rope_as_converter: bool = True) -> None:
    """The key-value metadata llama.cpp's converter writes for Grok (TextModel and GrokModel.set_gguf_parameters), and
    the vocabulary when a tokenizer is given."""
    gguf = _gguf()
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
    writer.add_file_type(file_type if file_type is not None else gguf.LlamaFileType.ALL_F32)
    writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping or 30.0))
    writer.add_router_logit_softcapping(float(config.router_logit_softcapping or 30.0))
    if config.final_logit_softcapping:
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    if config.rope_type == "yarn" or (config.rope_type == "original" and rope_as_converter):
        # What llama.cpp's converter does with the release's "original" ("treat original as yarn").
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
    if tokenizer is not None:
        _write_vocab(writer, tokenizer, config.vocab_size, gguf)


def _write_vocab(writer, tokenizer, vocab_size: int, gguf) -> None:
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


def export_gguf(model_or_folder, out_path: str | Path, tokenizer=None, dtype: str = "f32",
                name: str = "tiny Grok 2", rope_as_converter: bool = True) -> Path:
    """Write a Grok 2 model as a GGUF file for llama.cpp, as llama.cpp's own converter (GrokModel) would.

    `dtype`: "f32" or "f16" for the weight matrices (norms and the router stay F32, as the converter keeps them).
    `rope_as_converter=False` departs from the converter on one point: it writes plain RoPE (as SGLang reads
    `rope_type: "original"`) instead of YaRN, removing one of llama.cpp's differences from the reference.
    The file appears whole or not at all (written beside it, then renamed)."""
    import numpy as np
    import torch

    gguf = _gguf()
    if dtype not in ("f32", "f16"):
        raise CourseError(f"export_gguf writes f32 or f16, not {dtype!r}.",
                          "export f16 and quantize the file with llama.cpp's llama-quantize")
    if isinstance(model_or_folder, (str, Path)):
        from ..loading import load_model, load_tokenizer

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
    weights_type = dtype.upper()
    state = {k: v.detach().to(torch.float32).cpu() for k, v in model.state_dict().items()}
    layout = gguf_tensor_layout({k: tuple(v.shape) for k, v in state.items()}, config, weights_type)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GROK, config.num_hidden_layers)
    arrays = {}
    for key, tensor in state.items():
        if ".block_sparse_moe.experts." not in key:
            arrays[names.get_name(key.removesuffix(".weight")) + ".weight"] = tensor.numpy()
    for layer in range(config.num_hidden_layers):
        for checkpoint_name, (_, gguf_kind) in EXPERT_PROJECTIONS.items():
            arrays[f"blk.{layer}.{gguf_kind}.weight"] = torch.stack(
                [state[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{checkpoint_name}.weight"]
                 for e in range(config.num_local_experts)]).numpy()

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".partial")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GROK])
        file_type = gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
        write_metadata(writer, config, tokenizer, file_type=file_type, name=name, rope_as_converter=rope_as_converter)
        for gguf_name, (_, kind) in layout.items():
            writer.add_tensor(gguf_name, arrays[gguf_name].astype(np.float16 if kind == "F16" else np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out_path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return out_path


def expected_gguf_tensors(config) -> dict[str, tuple[int, ...]]:
    """Every tensor llama.cpp's grok loader (`llama_model_grok::load_arch_tensors`) asks for, with its GGUF shape
    (ggml order: fastest dimension first). Written from the loader, independently of `gguf_tensor_layout`."""
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


def _field(reader, key):
    found = reader.fields.get(key)
    return None if found is None else found.contents()


def _check_config(reader, config, problems: list[str]) -> None:
    for key, want in {"grok.block_count": config.num_hidden_layers, "grok.embedding_length": config.hidden_size,
                      "grok.expert_count": config.num_local_experts,
                      "grok.expert_used_count": config.num_experts_per_tok,
                      "grok.expert_feed_forward_length": config.moe_intermediate_size,
                      "grok.attention.head_count": config.num_attention_heads,
                      "grok.attention.head_count_kv": config.num_key_value_heads}.items():
        if _field(reader, key) != want:
            problems.append(f"{key} = {_field(reader, key)}, expected {want}")
    for key, want in {"grok.embedding_scale": config.embedding_multiplier_scale,
                      "grok.logit_scale": config.output_multiplier_scale,
                      "grok.final_logit_softcapping": config.final_logit_softcapping,
                      "grok.attn_logit_softcapping": config.attn_logit_softcapping,
                      "grok.router_logit_softcapping": config.router_logit_softcapping}.items():
        got = _field(reader, key)
        if got is None or abs(got - want) > 1e-4 * max(1.0, abs(want)):
            problems.append(f"{key} = {got}, expected {want}")


def _check_weights(reader, model, problems: list[str]) -> int:
    import numpy as np

    gguf = _gguf()
    config = model.config
    by_name = {t.name: t for t in reader.tensors}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GROK, config.num_hidden_layers)
    kinds = {checkpoint: kind for checkpoint, (_, kind) in EXPERT_PROJECTIONS.items()}
    checked = 0
    for key, tensor in model.state_dict().items():
        array = tensor.detach().float().cpu().numpy()
        if ".experts." in key:
            parts = key.split(".")
            layer, expert, which = int(parts[2]), int(parts[5]), parts[6]
            data = np.asarray(by_name[f"blk.{layer}.{kinds[which]}.weight"].data)[expert]
        else:
            data = np.asarray(by_name[names.get_name(key.removesuffix(".weight")) + ".weight"].data)
        if data.shape != array.shape or not np.allclose(data.astype(np.float32), array, atol=1e-3, rtol=1e-3):
            problems.append(f"{key}: values differ from the model's")
        checked += 1
    return checked


def verify_gguf(path: str | Path, model=None, tokenizer=None) -> dict:
    """Read a GGUF back and check it against llama.cpp's grok loader and (optionally) the model it came from.

    Checks: architecture `grok`; every tensor the loader requires, with its shape, and nothing else; the hyper-
    parameters it reads; the vocabulary (ids of the control tokens, merges); and, given the model, that every tensor
    holds exactly the model's weights (experts un-stacked again)."""
    gguf = _gguf()
    reader = gguf.GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    tensors = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    report = {"architecture": arch, "tensors": len(tensors), "file_bytes": Path(path).stat().st_size, "problems": []}
    problems = report["problems"]
    if arch != "grok":
        problems.append(f"architecture is {arch!r}, not 'grok'")
    if model is not None:
        expected = expected_gguf_tensors(model.config)
        for name, shape in expected.items():
            if name not in tensors:
                problems.append(f"missing tensor {name}")
            elif tensors[name] != shape:
                problems.append(f"{name}: shape {tensors[name]}, llama.cpp expects {shape}")
        problems += [f"unexpected tensor {n}" for n in tensors if n not in expected]
        _check_config(reader, model.config, problems)
        report["weights_checked"] = _check_weights(reader, model, problems)
    if tokenizer is not None:
        field = reader.fields["tokenizer.ggml.tokens"]
        tokens = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        report["vocab_size"] = len(tokens)
        for token in ("<|pad|>", "<|separator|>", "<|eos|>"):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if tokens[token_id] != token:
                problems.append(f"token {token_id} is {tokens[token_id]!r}, expected {token}")
        if _field(reader, "tokenizer.ggml.pre") != "grok-2":
            problems.append(f"tokenizer.ggml.pre = {_field(reader, 'tokenizer.ggml.pre')!r}, expected 'grok-2'")
        if _field(reader, "tokenizer.ggml.eos_token_id") != tokenizer.eos_token_id:
            problems.append("eos token id differs")
        report["chat_template"] = bool(_field(reader, "tokenizer.chat_template"))
    report["ok"] = not problems
    return report
