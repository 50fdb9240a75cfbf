"""Production engine commands for Grok 2.5 (from the memory plan), each at the engine version it names, checked
against that release's own files: model registry, tokenizer loader, option definitions."""

from __future__ import annotations

import json
import zipfile

import pytest

import helpers
from helpers import engine_files, engine_sources, engines
from helpers.paths import REPO_ROOT

# --------------------------------------------------------------------------------------------------- the plan


@pytest.fixture(scope="module")
def released():
    return engines.plan_deployment(gpu_memory_gib=80, gpus=8)


def test_released_checkpoint_runs_at_tp_8_even_when_memory_allows_less(released):
    assert released.gpus_needed == 4 and released.tensor_parallel == 8
    # on 8 x H200 (141 GiB) even SGLang's loading peak would allow TP 4: the released files keep TP 8, and say why
    h200 = engines.plan_deployment(gpu_memory_gib=141, gpus=8)
    assert h200.tensor_parallel == 8
    assert any("allow TP 4" in note and "split in 8" in note and "#36438" in note for note in h200.notes)
    # the PR is open (facts 3.2): the text must not say the bug was fixed
    assert "until" not in engines.SGLANG_TP_BUG and "PR #36438, open" in engines.SGLANG_TP_BUG
    assert "convert_released_checkpoint" in engines.SGLANG_REPACK
    assert engines.SGLANG_PRESHARDED_OFF in engines.SGLANG_REPACK
    assert 33 < released.weights_per_gpu_gb < 40  # FP8: "~34 GB per GPU", hence the card's "> 40 GB" GPUs
    assert round(released.disk_gb) == 539


def test_gpu_memory_is_given_in_gib_as_sold():
    """An "80 GB" GPU holds 80 GiB: the plan counts 80 * 2**30 bytes, the H100's datasheet entry."""
    from helpers.accelerators import H100_SXM
    from helpers.units import GiB

    assert engines.plan_deployment(gpu_memory_gib=H100_SXM.memory_bytes / GiB).gpus_needed == \
        engines._grok2_plan().gpus_needed(H100_SXM.memory_bytes, "fp8", 8192)
    for bad in (0, -80, "80", True, 1e9):
        with pytest.raises(helpers.CourseError, match="gpu_memory_gib"):
            engines.plan_deployment(gpu_memory_gib=bad)


def test_plans_that_cannot_work_are_refused():
    with pytest.raises(helpers.CourseError, match="tensor parallelism 8 only"):
        engines.plan_deployment(gpu_memory_gib=24, gpus=16)  # would need 16 x 24 GB
    # 8 x A100 40 GB: the FP8 weights would fit, but SGLang holds each GPU's bf16 slice (67.4 GB) while it loads
    with pytest.raises(helpers.CourseError, match="67.4 GB per GPU while loading at TP 8|needs tensor parallelism 16"):
        engines.plan_deployment(gpu_memory_gib=40, gpus=8)
    assert engines.plan_deployment(gpu_memory_gib=40, gpus=8, engine="vllm").tensor_parallel == 8  # quantizes as it loads
    with pytest.raises(helpers.CourseError, match="engine must be"):
        engines.plan_deployment(engine="tgi")
    with pytest.raises(helpers.CourseError, match="needs 8 GPUs and the node has 4"):
        engines.plan_deployment(gpu_memory_gib=80, gpus=4)


def test_converted_checkpoint_takes_the_tp_from_memory():
    """Each engine by its own memory rules (helpers.engine_memory): SGLang must first hold the bf16 slice."""
    assert engines.plan_deployment(gpu_memory_gib=141, gpus=8, released_layout=False).tensor_parallel == 4
    assert engines.plan_deployment(gpu_memory_gib=80, gpus=8, released_layout=False).tensor_parallel == 8
    assert engines.plan_deployment(gpu_memory_gib=80, gpus=8, released_layout=False, engine="vllm").tensor_parallel == 4
    assert engines.plan_deployment(gpu_memory_gib=48, gpus=8, released_layout=False, engine="vllm").tensor_parallel == 8
    with pytest.raises(helpers.CourseError, match="needs 16 GPUs"):
        engines.plan_deployment(gpu_memory_gib=48, gpus=8, released_layout=False)  # SGLang: 33.7 GB bf16 at TP 16


# ----------------------------------------------------------------------------------------------- the commands


def test_sglang_command_is_the_model_cards(released):
    command = engines.sglang_command(released, "/local/grok-2")
    text = " ".join(command.argv)
    assert text.startswith("python3 -m sglang.launch_server --model /local/grok-2 "
                           "--tokenizer-path /local/grok-2/tokenizer.tok.json --tp 8 --quantization fp8 "
                           "--attention-backend triton")
    assert "--host 127.0.0.1" in text and command.base_url == "http://127.0.0.1:30000/v1"
    assert command.shell().count("\\\n") == len(command.options) // 2
    assert command.version == engine_sources.ENGINES["sglang"].version and "sglang==" in command.install
    assert any("#36438" in note for note in command.notes)  # where tensor parallelism is discussed
    with_lora = engines.sglang_command(released, adapters={"mine": "/a/mine"})
    assert with_lora.argv[-3:] == ["--enable-lora", "--lora-paths", "mine=/a/mine"]
    assert command.checked_against == f"SGLang {engine_sources.ENGINES['sglang'].version}"
    assert any(f"{released.weights_per_gpu_gb:.1f} GB per GPU" in note for note in command.notes)
    two = engines.sglang_command(released, nnodes=2, node_rank=1, dist_init_addr="10.0.0.1:5000")
    assert two.argv[two.argv.index("--nnodes"):][:6] == ["--nnodes", "2", "--node-rank", "1", "--dist-init-addr",
                                                          "10.0.0.1:5000"]
    with pytest.raises(helpers.CourseError, match="first node's address"):
        engines.sglang_command(released, nnodes=2, node_rank=0)


def test_sglang_at_another_tp_serves_the_converted_checkpoint(released):
    """The one re-pack recipe for TP != 8: whole experts (convert_released_checkpoint) with load_presharded_moe off,
    so that SGLang 0.5.23's loader cuts each rank's slice; on the released files another TP is refused."""
    from dataclasses import replace

    converted = engines.plan_deployment(gpu_memory_gib=141, gpus=8, released_layout=False)
    command = engines.sglang_command(converted, "/local/grok-2-converted")
    argv = command.argv
    assert argv[argv.index("--tp") + 1] == "4" and argv[argv.index("--model") + 1] == "/local/grok-2-converted"
    assert argv[argv.index("--json-model-override-args") + 1] == engines.SGLANG_PRESHARDED_OFF
    assert any("cut each rank's expert slice" in note for note in command.notes)
    assert "'{\"load_presharded_moe\": false}'" in command.shell()
    assert "--json-model-override-args" not in engines.sglang_command(released).argv
    with pytest.raises(helpers.CourseError, match="(?s)TP 4 on the released files.*converted checkpoint"):
        engines.sglang_command(replace(released, tensor_parallel=4))


def test_sglang_reads_the_files_the_recipe_relies_on(engine_release):
    """What SGLANG_REPACK relies on, read in the pinned wheel: presharded expert loading is a config attribute that
    defaults to on, the TP-file glob falls back to every *.safetensors, and the weight loader cuts a rank's slice
    only when the weights are not presharded."""
    files = engine_release("sglang")
    grok = files.read("sglang/srt/models/grok.py")
    assert 'getattr(config, "load_presharded_moe", True)' in grok
    assert '*-TP-{tp_rank:03d}.safetensors' in grok and "if not hf_weights_files:" in grok
    layer = files.read("sglang/srt/layers/moe/fused_moe_triton/layer.py")
    assert "if not self.use_presharded_weights:" in layer and "self.moe_tp_rank" in layer


def test_vllm_command_names_the_last_release_that_serves_grok_2(released):
    vllm = engines.vllm_command(released, "/local/grok-2", adapters={"mine": "/a/mine"})
    assert vllm.argv[:3] == ["vllm", "serve", "/local/grok-2"] and vllm.version == "0.24.0"
    assert vllm.install == "pip install vllm==0.24.0" and any("removed Grok after 0.24.0" in n for n in vllm.needs)
    assert vllm.argv[vllm.argv.index("--tensor-parallel-size") + 1] == "8"
    assert ["--lora-modules", "mine=/a/mine"] == vllm.argv[vllm.argv.index("--lora-modules"):][:2]
    assert any("convert_released_checkpoint" in note for note in vllm.notes)


def test_no_command_for_a_version_the_course_did_not_check():
    with pytest.raises(helpers.CourseError, match="checked vllm 0.24.0 only, not 0.25.0"):
        engines.EngineCommand("vllm", ["vllm", "serve", "/m"], 8000, version="0.25.0", parser_argv_start=2)
    with pytest.raises(helpers.CourseError, match="Unknown engine"):
        engines.EngineCommand("tgi", ["text-generation-launcher"], 8080)


def test_llama_cpp_commands_for_gpu_ram_hybrids():
    plain = engines.llama_cpp_command("/m/grok-2-Q4_K_M.gguf", gpu_layers=20)
    assert plain.argv[:3] == ["llama-server", "--model", "/m/grok-2-Q4_K_M.gguf"] and "--jinja" in plain.argv
    assert "127.0.0.1" in plain.argv and plain.version == engine_sources.ENGINES["llama.cpp"].version
    every = engines.llama_cpp_command("/m.gguf", gpu_layers="all", cpu_moe=True)
    assert every.argv[-3:] == ["--n-gpu-layers", "all", "--cpu-moe"] and any("RAM bandwidth" in n for n in every.notes)
    first = engines.llama_cpp_command("/m.gguf", gpu_layers="all", n_cpu_moe=40)
    assert first.argv[-2:] == ["--n-cpu-moe", "40"]
    rule = r"blk\.(1[0-9])\.ffn_.*_exps=CPU"
    assert engines.llama_cpp_command("/m.gguf", override_tensors=[rule]).argv[-2:] == ["--override-tensor", rule]
    for bad, match in (({"cpu_moe": True, "n_cpu_moe": 3}, "both place experts"), ({"n_cpu_moe": -1}, "negative"),
                       ({"gpu_layers": "most"}, "not a layer count"), ({"override_tensors": ["exps"]}, "no buffer")):
        with pytest.raises(helpers.CourseError, match=match):
            engines.llama_cpp_command("/m.gguf", **bad)
    steps = engines.gguf_conversion_steps("/local/grok-2")
    assert "alvarobartt/grok-2-tokenizer" in steps[1] and "--outtype bf16" in steps[2] and steps[3].endswith("Q4_K_M")


def test_unsloth_commands_open_the_downloaded_file_or_its_first_part():
    single = engines.unsloth_llama_cpp_command("TQ1_0", gpu_layers=0)
    assert single.argv[single.argv.index("--model") + 1] == "grok-2-GGUF/grok-2-UD-TQ1_0.gguf" and not single.setup
    split = engines.unsloth_llama_cpp_command("IQ1_S", cpu_moe=True)
    assert split.argv[split.argv.index("--model") + 1] == "$GROK2_GGUF"
    assert split.setup[0].startswith('GROK2_GGUF="$(ls grok-2-GGUF/IQ1_S/grok-2-IQ1_S-00001-of-*.gguf)"')
    shell = split.shell()
    assert shell.startswith("GROK2_GGUF=") and '--model "$GROK2_GGUF"' in shell  # expanded by the shell, not quoted
    assert any('--include "IQ1_S/*"' in need for need in split.needs)
    assert any("has not recorded" in note for note in split.notes)
    with pytest.raises(helpers.CourseError, match="no 'Q4_K_M' files"):
        engines.unsloth_llama_cpp_command("Q4_K_M")


# ------------------------------------------------------------------------------- checked in the engines' files


@pytest.mark.parametrize("engine", list(engine_sources.ENGINES))
def test_every_pinned_engine_serves_grok_2_and_reads_its_tokenizer(engine, engine_release):
    """Fails the day a pinned version drops the architecture (as vLLM did after 0.24.0)."""
    files = engine_release(engine)
    registry = engine_files.served(files)
    assert registry.ok, registry.evidence
    assert engine_files.reads_tok_json(files).ok


def test_commands_pass_the_check_of_the_version_they_name(released, engine_release):
    for engine in engine_sources.ENGINES:
        engine_release(engine)
    converted = engines.plan_deployment(gpu_memory_gib=141, gpus=8, released_layout=False)
    commands = [engines.sglang_command(released, adapters={"a": "/a"}, api_key_placeholder="$K", context_length=8192),
                engines.sglang_command(released, nnodes=2, node_rank=1, dist_init_addr="10.0.0.1:5000"),
                engines.vllm_command(converted, adapters={"a": "/a"}, api_key_placeholder="$K"),
                engines.llama_cpp_command("/m.gguf", gpu_layers="all", n_cpu_moe=40, threads=8, api_key_placeholder="$K"),
                engines.llama_cpp_command("/m.gguf", cpu_moe=True, override_tensors=[r"blk\.0\.ffn_up_exps=CPU"])]
    commands += [engines.sglang_command(converted, "/local/grok-2-converted"),
                 engines.unsloth_llama_cpp_command("IQ1_S", gpu_layers=65, n_cpu_moe=30)]
    for command in commands:
        check = engines.check_command(command)
        assert check.ok, (command.engine, check.problems)
        assert command.version in check.checked_with and check.serves_grok2 and check.tokenizer
    sglang = engines.check_command(commands[0])
    assert sglang.notes == ["--tp is not an option of its own: argparse accepts it as an abbreviation of --tp-size"]


def test_the_check_catches_typos_ambiguity_and_refused_values(released, engine_release):
    engine_release("sglang")
    engine_release("vllm")
    typo = engines.EngineCommand("sglang", ["python3", "-m", "sglang.launch_server", "--model", "/m", "--quantisation",
                                            "fp8", "--attention-backend", "tritonn", "--lora"], 30000,
                                 parser_argv_start=3)
    problems = engines.check_command(typo).problems
    assert "unknown option --quantisation" in problems
    assert "--attention-backend tritonn: not among the accepted values" in problems
    assert any(p.startswith("ambiguous option --lora") for p in problems)
    vllm = engines.EngineCommand("vllm", ["vllm", "serve", "/m", "--quantization", "fp9"], 8000, parser_argv_start=2)
    assert engines.check_command(vllm).problems == ["--quantization fp9: not among the accepted values"]
    llama = engines.EngineCommand("llama.cpp", ["llama-server", "--cpu-moes", "--n-cpu"], 8080, parser_argv_start=1)
    assert engines.check_command(llama).problems == ["unknown option --cpu-moes", "unknown option --n-cpu"]


def test_a_release_that_lists_grok_as_previously_supported_is_refused(tmp_path):
    """The registry layout of vLLM >= 0.25, in a wheel written here (the real 0.25.0 is read by
    benchmarks/engine_args_check.py, recorded below)."""
    wheel = tmp_path / "vllm-0.25.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("vllm/model_executor/models/registry.py",
                         '_TEXT_GENERATION_MODELS = {"LlamaForCausalLM": ("llama", "LlamaForCausalLM")}\n'
                         '_PREVIOUSLY_SUPPORTED_MODELS = {"Grok1ForCausalLM": "0.24.0"}\n')
        archive.writestr("vllm/model_executor/models/llama.py", "")
    finding = engine_files.served(engine_sources.EngineFiles("vllm", wheel))
    assert not finding.ok and "previously" in finding.evidence.lower() and "'0.24.0'" in finding.evidence


def test_recorded_check_of_every_command_and_of_the_release_after_the_last():
    """benchmarks/results/engine-args-check.json: today's commands against the pinned releases' files, and vLLM
    0.25.0's registry, which no longer serves Grok 2."""
    recorded = json.loads((REPO_ROOT / "benchmarks" / "results" / "engine-args-check.json").read_text())
    assert {row["engine"] for row in recorded["checks"]} == {"sglang", "vllm", "llama.cpp"}
    assert all(row["ok"] and not row["problems"] for row in recorded["checks"])
    assert {row["version"] for row in recorded["checks"]} == {e.version for e in engine_sources.ENGINES.values()}
    current = " ".join(engines.sglang_command(engines.plan_deployment()).argv)
    assert current in {" ".join(row["argv"]) for row in recorded["checks"]}, "the record is of today's command"
    later = recorded["later_releases"]["vllm"]
    assert later["version"] == "0.25.0" and not later["serves_grok2"] and "0.24.0" in later["evidence"]


def test_llama_cpp_differences_are_named():
    assert set(engines.LLAMA_CPP_DIFFERENCES) == {"rope", "temperature", "router_cap", "renormalise"}


def test_a_build_without_compiler_or_cmake_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("GROK2_COURSE_CACHE", str(tmp_path))  # nothing built there
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(engine_sources.shutil, "which", lambda tool: None)
    with pytest.raises(helpers.CourseError, match="(?s)needs cmake and a C\\+\\+ compiler.*build-essential cmake"):
        engine_sources.build_llama_cpp()
    assert not (tmp_path / f"llama.cpp-{engine_sources.ENGINES['llama.cpp'].version}" / "bin").exists()
