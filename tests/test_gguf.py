"""GGUF: the tiny Grok 2 exported as llama.cpp's converter writes it, read back, and file sizes computed from the
tensor list and llama.cpp's rules, compared with what llama.cpp's own llama-quantize writes."""

from __future__ import annotations

import subprocess

import pytest
import torch
from transformers import AutoConfig

import helpers
from helpers import gguf as hgguf
from helpers.gguf.sizes import MIXES, UNSLOTH_DYNAMIC

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(model, tokenizer):
    return model, tokenizer


# ------------------------------------------------------------------------------------------------- export


def test_tiny_grok_2_exports_to_a_gguf_llama_cpp_can_load(tmp_path, tiny):
    model, tokenizer = tiny
    path = hgguf.export_gguf(model, tmp_path / "tiny.gguf", tokenizer=tokenizer)
    report = hgguf.verify_gguf(path, model, tokenizer)
    assert report["ok"], report["problems"]
    assert report["architecture"] == "grok" and report["tensors"] == len(hgguf.expected_gguf_tensors(model.config))
    assert report["weights_checked"] == len(model.state_dict()) and report["chat_template"]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.gguf"]  # written beside, then renamed: no leftovers


def test_gguf_metadata_follows_llama_cpps_converter(tmp_path, tiny):
    import gguf

    model, tokenizer = tiny
    reader = gguf.GGUFReader(str(hgguf.export_gguf(model, tmp_path / "tiny.gguf", tokenizer=tokenizer, dtype="f16")))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("grok.rope.scaling.type") == "yarn"  # the converter's "treat original as yarn"
    assert field("grok.attention.temperature_length") == model.config.attn_temperature_len
    assert abs(field("grok.attention.output_scale") - model.config.head_dim ** -0.5) < 1e-6
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.add_bos_token") is False
    assert field("tokenizer.ggml.eos_token_id") == 2 and field("tokenizer.ggml.padding_token_id") == 0
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    tensors = {t.name: t for t in reader.tensors}
    experts = tensors["blk.0.ffn_down_exps.weight"]
    assert tuple(experts.shape) == (model.config.moe_intermediate_size, model.config.hidden_size, 8)
    # f16 weights; norms and the router in F32, as the converter keeps them
    kinds = {name: t.tensor_type.name for name, t in tensors.items()}
    assert kinds["blk.0.attn_q.weight"] == "F16" and kinds["blk.0.ffn_down_exps.weight"] == "F16"
    assert kinds["blk.0.ffn_gate_inp.weight"] == "F32" and kinds["blk.0.attn_norm.weight"] == "F32"


def test_verify_gguf_catches_a_wrong_file(tmp_path, tiny):
    model, tokenizer = tiny
    path = hgguf.export_gguf(model, tmp_path / "tiny.gguf", tokenizer=tokenizer)
    changed = helpers.load_model(verbose=False)
    with torch.no_grad():
        changed.model.layers[1].block_sparse_moe.experts[3].w2.weight.add_(1.0)
    report = hgguf.verify_gguf(path, changed, tokenizer)
    assert report["problems"] == ["model.layers.1.block_sparse_moe.experts.3.w2.weight: values differ from the model's"]
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(helpers.CourseError, match="Grok 2 models only"):
        hgguf.export_gguf(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16)),
                          tmp_path / "gpt2.gguf", tokenizer=tokenizer)
    with pytest.raises(helpers.CourseError, match="f32 or f16"):
        hgguf.export_gguf(model, tmp_path / "q.gguf", tokenizer=tokenizer, dtype="q4")
    assert not (tmp_path / "gpt2.gguf").exists() and not (tmp_path / "q.gguf").exists()


def test_plain_rope_variant_and_end_of_turn(tmp_path, tiny):
    import gguf

    model, tokenizer = tiny
    reader = gguf.GGUFReader(str(hgguf.export_gguf(model, tmp_path / "plain.gguf", tokenizer=tokenizer,
                                                   rope_as_converter=False)))
    assert "grok.rope.scaling.type" not in reader.fields
    assert reader.fields["tokenizer.ggml.eot_token_id"].contents() == 1  # <|separator|> ends a turn in llama.cpp


# ----------------------------------------------------------------------------------------------------- sizes


def test_grok_2_5_sizes_come_from_its_tensor_list():
    config = AutoConfig.from_pretrained(helpers.GROK2_RELEASED_CONFIG)
    plan = helpers.plan_memory(config)
    bf16 = hgguf.gguf_size(config, "BF16")
    assert set(bf16.bytes_by_class) == set(hgguf.CLASSES) and bf16.exact
    kept_f32 = bf16.bytes_by_class["router"] + bf16.bytes_by_class["norms"]  # the converter keeps them in F32
    assert bf16.weights == 2 * plan.total_params + kept_f32 // 2
    assert bf16.total_bytes == bf16.header_bytes + bf16.weights  # every tensor's bytes are a multiple of 32
    assert bf16.bytes_by_class["experts"] == 2 * plan.expert_params
    q4 = hgguf.gguf_size(config, "Q4_K_M")
    # llama.cpp's rules for an 8-expert model: attention K and V in Q8_0, the output head in Q6_K, the experts' down
    # projections of the "more bits" layers in Q6_K, the rest of the experts in Q4_K.
    types = q4.tensor_types
    assert types["blk.10.attn_v.weight"] == types["blk.10.attn_k.weight"] == "Q8_0"
    assert types["output.weight"] == "Q6_K" and types["blk.0.ffn_down_exps.weight"] == "Q6_K"
    assert types["blk.9.ffn_down_exps.weight"] == "Q4_K" and types["blk.9.ffn_up_exps.weight"] == "Q4_K"
    assert types["blk.3.ffn_gate_inp.weight"] == "F32"
    sizes = [hgguf.gguf_size(config, q).total_bytes for q in ("IQ1_S", "Q2_K", "Q4_K_M", "Q6_K", "Q8_0", "BF16")]
    assert sizes == sorted(sizes)


def test_unsloth_quantizations_are_known_and_approximations_say_so():
    config = helpers.GROK2_RELEASED_CONFIG
    for quant in hgguf.UNSLOTH_GROK2_QUANTS:
        size = hgguf.gguf_size(config, quant)
        assert size.total_bytes > 0 and quant in hgguf.GGUF_QUANTS
        assert size.exact == (quant not in UNSLOTH_DYNAMIC)
        if not size.exact:
            assert "approximated" in size.note and UNSLOTH_DYNAMIC[quant] in size.note
    assert "importance matrix assumed" in hgguf.gguf_size(config, "IQ1_S").note
    with pytest.raises(helpers.CourseError, match="(?s)Unknown GGUF quantization 'Q4_K_X'.*Q4_K_M"):
        hgguf.gguf_size(config, "Q4_K_X")


def test_one_download_pattern_per_unsloth_quantization():
    """Each pattern fetches its own type's file(s) of unsloth/grok-2-GGUF and nothing else, laid out as the table says:
    TQ1_0 one file at the root (grok-2-UD-TQ1_0.gguf), every other type a folder of numbered parts."""
    from huggingface_hub.utils import filter_repo_objects

    assert set(hgguf.UNSLOTH_FILES) == set(hgguf.UNSLOTH_GROK2_QUANTS)
    files = []
    for quant, entry in hgguf.UNSLOTH_FILES.items():
        if entry.parts == 1:
            files.append(entry.first_part(""))
        else:
            files += [f"{entry.folder}/{entry.stem}-0000{k}-of-00003.gguf" for k in (1, 2, 3)]
    files = [name.lstrip("/") for name in files]
    for quant, entry in hgguf.UNSLOTH_FILES.items():
        command = hgguf.unsloth_download_command(quant)
        assert command.startswith("hf download unsloth/grok-2-GGUF --include ")
        pattern = command.split('"')[1]
        fetched = set(filter_repo_objects(files, allow_patterns=[pattern]))
        assert fetched and all(name.split("/")[-1].startswith(entry.stem) for name in fetched), quant
        assert len(fetched) == (entry.parts or 3), quant
    tq1 = hgguf.unsloth_file("TQ1_0")
    assert tq1.parts == 1 and tq1.folder == "" and tq1.stem == "grok-2-UD-TQ1_0" and tq1.dynamic
    assert {q for q, e in hgguf.UNSLOTH_FILES.items() if not e.dynamic} == {"IQ1_S", "IQ4_XS"}
    assert hgguf.unsloth_file("UD-Q2_K_XL").first_part("d") is None  # the part count is not recorded
    assert hgguf.unsloth_file("UD-Q2_K_XL").first_part_name == "grok-2-UD-Q2_K_XL-00001-of-"
    with pytest.raises(helpers.CourseError, match="no 'Q4_K_M' files"):
        hgguf.unsloth_download_command("Q4_K_M")


# Quantizations llama-quantize makes without an importance matrix (the IQ1/IQ2/IQ3_XXS mixes require one). The
# k-quant shaped model takes the mixes whose rules depend on the layer (13M weights each; IQ4_XS, whose search is
# slow at that size, only on the tiny model).
QUANTIZED_HERE = {"tiny": ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
                           "Q8_0", "IQ4_XS", "TQ1_0", "BF16"),
                  "k-quant shaped": ("Q2_K", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_M", "TQ1_0")}


def _kquant_shaped_grok(tokenizer):
    """A random Grok 2 whose rows are multiples of 256 (llama.cpp's k-quant block), 8 layers, 4 query heads per KV
    head: the rules that depend on layers and head groups act as on Grok 2.5. The tiny model's 64-wide rows take
    the fallbacks instead."""
    from helpers.grok2 import Grok2Config, Grok2ForCausalLM

    tiny = helpers.load_config(str(helpers.TINY_MODEL_DIR))
    config = Grok2Config(**{**tiny.to_dict(), "hidden_size": 256, "intermediate_size": 256,
                            "moe_intermediate_size": 256, "num_hidden_layers": 8, "num_attention_heads": 8,
                            "num_key_value_heads": 2, "head_dim": 32, "vocab_size": len(tokenizer)})
    torch.manual_seed(0)
    return Grok2ForCausalLM(config).eval()


@pytest.mark.parametrize("which", ["tiny", "k-quant shaped"])
def test_computed_sizes_equal_llama_quantizes_files(tmp_path, tiny, which, llama_cpp_tool):
    """Within 1% as asked; in fact to the byte, header included. (~10-40 s: llama.cpp itself quantizes 22 files.)"""
    quantize = llama_cpp_tool("llama-quantize")
    model, tokenizer = tiny
    if which != "tiny":
        model = _kquant_shaped_grok(tokenizer)
    source = hgguf.export_gguf(model, tmp_path / "source-f32.gguf", tokenizer=tokenizer)
    mismatches = {}
    for quant in QUANTIZED_HERE[which]:
        out = tmp_path / f"{quant}.gguf"
        run = subprocess.run([str(quantize), str(source), str(out), quant, "2"], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        computed = hgguf.gguf_size(model.config, quant, tokenizer=tokenizer, imatrix=False)
        written = out.stat().st_size
        assert abs(computed.total_bytes - written) <= 0.01 * written, (quant, computed.total_bytes, written)
        if computed.total_bytes != written:
            mismatches[quant] = (computed.total_bytes, written)
        out.unlink()
    assert not mismatches, mismatches  # every type to the byte: the rules and the header are llama.cpp's


def test_the_mixes_cover_llama_quantizes_names(engine_release):
    """Every mix priced here is a type llama-quantize of the pinned llama.cpp offers, with the same base type."""
    import re

    text = engine_release("llama.cpp").read("tools/quantize/quantize.cpp")
    offered = set(re.findall(r'\{\s*"([A-Z0-9_]+)",\s*LLAMA_FTYPE_', text))
    assert set(MIXES) <= offered, set(MIXES) - offered
    defaults = engine_release("llama.cpp").read("src/llama-quant.cpp")
    for name, mix in MIXES.items():
        if mix.default == name:
            continue
        assert re.search(rf"LLAMA_FTYPE_MOSTLY_{name}:(\s*case LLAMA_FTYPE_MOSTLY_\w+:)*\s*return GGML_TYPE_"
                         rf"{mix.default};", defaults), name
