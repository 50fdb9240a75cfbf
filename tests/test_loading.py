"""load_model / load_tokenizer: right dtype and placement per machine, and clear refusals with the fix."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from transformers import GraniteMoeConfig

import helpers
from helpers.errors import CourseError
from helpers.loading import check_local_folder, choose_dtype, load_config, plan_placement
from helpers.hardware import GPU, Hardware
from helpers.memory import plan_memory
from helpers.units import GB


def fake_hardware(device="cpu", gpus=(), ram_gb=16.0):
    return Hardware(
        device=device,
        gpus=[GPU(i, n, int(t * GB), int(t * GB), c) for i, (n, c, t) in enumerate(gpus)],
        ram_total_bytes=int(ram_gb * GB),
        ram_available_bytes=int(ram_gb * GB),
    )


T4 = ("Tesla T4", (7, 5), 15.0)
H100 = ("NVIDIA H100 80GB HBM3", (9, 0), 80.0)


@pytest.fixture(scope="module")
def granite_plan():
    config = GraniteMoeConfig(
        hidden_size=1536, intermediate_size=512, num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8,
        num_local_experts=40, num_experts_per_tok=8, vocab_size=49155, tie_word_embeddings=True,
    )
    return plan_memory(config, "granite-3b-a800m")


def test_dtype_follows_the_hardware(granite_plan):
    assert choose_dtype("auto", fake_hardware("cuda", [T4]), granite_plan) == torch.float16  # T4 has no bf16
    assert choose_dtype("auto", fake_hardware("cuda", [H100]), granite_plan) == torch.bfloat16
    assert choose_dtype("auto", fake_hardware("cpu", ram_gb=64), granite_plan) == torch.float32
    assert choose_dtype("auto", fake_hardware("cpu", ram_gb=20), granite_plan) == torch.bfloat16
    assert choose_dtype("float16", fake_hardware(), granite_plan) == torch.float16


def test_small_profile_fits_one_t4(granite_plan):
    placement = plan_placement(granite_plan, fake_hardware("cuda", [T4]), torch.float16, None, "auto", None)
    assert placement.device_map == {"": 0}


def test_grok2_is_refused_on_a_24gb_gpu_with_numbers_and_alternatives(grok2_plan):
    rtx4090 = ("RTX 4090", (8, 9), 24.0)
    with pytest.raises(CourseError) as error:
        plan_placement(grok2_plan, fake_hardware("cuda", [rtx4090], ram_gb=64), torch.bfloat16, None, "auto", None)
    message = str(error.value)
    assert "539.0 GB" in message and "269.5B" in message and "Nothing was downloaded" in message
    assert "x 80 GB GPUs" in message and "Fix:" in message


def test_grok2_bf16_spreads_over_eight_h100s_and_nf4_over_two(grok2_plan):
    eight = fake_hardware("cuda", [H100] * 8, ram_gb=1000)
    placement = plan_placement(grok2_plan, eight, torch.bfloat16, None, "auto", None)
    assert placement.device_map == "auto" and len(placement.max_memory) == 8
    two = fake_hardware("cuda", [H100] * 2, ram_gb=64)
    assert plan_placement(grok2_plan, two, torch.bfloat16, "nf4", "auto", None).device_map == "auto"
    with pytest.raises(CourseError):
        plan_placement(grok2_plan, two, torch.bfloat16, None, "auto", None)


def test_cpu_machine_suggests_quantization_when_that_fits():
    from transformers import LlamaConfig

    # TinyLlama-1.1B's shape: 2.2 GB in bf16, ~0.76 GB in 4-bit (measured on an H100, benchmarks/results).
    llama = plan_memory(LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                    num_attention_heads=32, num_key_value_heads=4, vocab_size=32000), "llama-1b")
    with pytest.raises(CourseError, match='quantization="nf4"'):
        plan_placement(llama, fake_hardware("cpu", ram_gb=1.5), torch.bfloat16, None, "auto", None)


def test_bitsandbytes_leaves_stacked_experts_in_16_bit(granite_plan):
    # transformers v5 stores a MoE layer's experts as one 3D tensor; bitsandbytes only quantizes nn.Linear, so 4-bit
    # hardly shrinks Granite 3B-A800M (6.6 -> 6.3 GB, measured on an H100) while FP8 engines halve it.
    assert granite_plan.stacked_expert_params > 0.9 * granite_plan.expert_params
    assert granite_plan.weight_bytes("nf4") > 0.9 * granite_plan.weight_bytes("bf16")
    assert granite_plan.weight_bytes("fp8") < 0.55 * granite_plan.weight_bytes("bf16")
    with pytest.raises(CourseError, match="Even 4-bit needs"):
        plan_placement(granite_plan, fake_hardware("cpu", ram_gb=3.5), torch.bfloat16, None, "auto", None)


def test_lfs_pointer_is_caught_before_loading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 8924160\n"
    )
    with pytest.raises(CourseError, match="Git LFS pointers") as error:
        check_local_folder(tmp_path)
    assert "git lfs pull" in str(error.value)


def test_missing_config_and_bad_ids(tmp_path):
    with pytest.raises(CourseError, match="No config.json"):
        load_config(str(tmp_path))
    with pytest.raises(CourseError, match="neither an existing folder nor a hub id"):
        load_config("no/such/folder/here")


def test_unknown_hub_id_offline_is_explained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CourseError, match="hub") as error:
        load_config("nobody-at-all/no-such-model-xyz")
    assert "HF_HUB_OFFLINE" in str(error.value) or "GROK2_COURSE_PROFILE=tiny" in str(error.value)


def test_released_grok2_config_plans_offline():
    config = load_config("xai-org/grok-2")
    assert isinstance(config, helpers.grok2.Grok2Config) and config.num_hidden_layers == 64


def test_refuses_grok2_here_before_downloading():
    """On this CPU machine the real Grok 2.5 is refused from its config alone."""
    with pytest.raises(CourseError, match="does not fit"):
        helpers.load_model(profile="grok-2")


def test_the_tokenizer_is_the_one_the_plan_resolved():
    plan = helpers.plan_load()
    assert plan.source == helpers.get_profile().model_id and plan.tokenizer_source == helpers.get_profile().tokenizer_id
    # The plan wins over a name: nothing is resolved again (that name does not exist).
    tokenizer = helpers.load_tokenizer("nowhere/no-such-model", plan=plan)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == 0
    without = replace(plan, tokenizer_source=None)  # no tokenizer of its own: the model's folder
    assert helpers.load_tokenizer(plan=without).vocab_size == tokenizer.vocab_size


def test_loads_the_tiny_model_for_the_profile():
    model = helpers.load_model(verbose=False)
    tokenizer = helpers.load_tokenizer()
    assert type(model).__name__ == "Grok2ForCausalLM" and not model.training
    assert model.dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == 0


# ------------------------------------------------------------------------- damaged weight files (#18 item 15)


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_a_damaged_safetensors_file_is_named_with_the_fix(tmp_path, damage):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(helpers.TINY_MODEL_DIR, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncated":
        data = data[:-4096]  # a copy or download that stopped early
    else:
        data[12:16] = b"\xff\xfe\x00{"  # bytes of the JSON header overwritten
    weights.write_bytes(bytes(data))
    with pytest.raises(CourseError, match="is damaged") as error:  # never a raw SafetensorError
        helpers.load_model(folder, verbose=False)
    assert str(weights) in error.value.problem and ("truncated" if damage == "truncated" else "header") in str(error.value)
    assert "hf download" in error.value.fix  # not a clone: the fix is to download that file again


def test_verify_needs_a_clone(tmp_path):
    import shutil

    shutil.copytree(helpers.TINY_MODEL_DIR, tmp_path / "model")
    with pytest.raises(CourseError, match="needs a git clone"):
        helpers.load_model(tmp_path / "model", verbose=False, verify=True)
    with pytest.raises(CourseError, match="needs a git clone"):  # a folder inside another repository is not one either
        helpers.load_model(helpers.TINY_MODEL_DIR, verbose=False, verify="full")


def test_the_default_check_of_a_clone_says_what_it_could_not_check(tmp_path, monkeypatch, capsys):
    """load_model's default (verify="auto") on a copied clone where git is missing: it says so in one line and goes on
    (loading needs no git); a folder that is no clone is not checked at all (nothing holds its sha256s)."""
    from helpers.loading import check_checksums_if_cheap

    clone = tmp_path / "copied-clone"
    (clone / ".git").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    check_checksums_if_cheap(clone, verbose=False)
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "not checked against their sha256" in said and "git is not installed" in said
    check_checksums_if_cheap(tmp_path, verbose=False)  # no .git: nothing to check against, no git needed, nothing said
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------- offline without being told (#18 item 18)


@pytest.fixture
def no_network(monkeypatch):
    """A laptop on a train: HF_HUB_OFFLINE is not set, and every name lookup fails at once, as it does without a
    network ("Name or service not known"). Nothing can reach the network while this fixture is active."""
    import socket

    import huggingface_hub.constants

    from helpers import network

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    lookups = []

    def no_resolver(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
    network.forget()
    yield lookups
    network.forget()


def test_offline_without_being_told_is_detected_once_and_fast(no_network, capsys):
    import time

    started = time.monotonic()
    config = load_config("xai-org/grok-2")
    assert isinstance(config, helpers.grok2.Grok2Config) and config.num_hidden_layers == 64
    with pytest.raises(CourseError, match="does not fit") as error:
        helpers.load_model(profile="grok-2")
    load_config("xai-org/grok-2")
    assert time.monotonic() - started < 5  # was about 23 s per call: five retries of the hub
    said = capsys.readouterr()
    assert said.out.count("\n") == 1 and "using the course's copy" in said.out and "cannot be resolved" in said.out
    assert "Retrying" not in said.err and "Name or service not known" not in said.err
    assert no_network == ["huggingface.co"]  # one lookup: the verdict is kept for the process
    # The refusal agrees with the lessons: the released files run at tensor parallelism 8 (SGLang), not "4+".
    assert "tensor parallelism 8" in error.value.fix and "--tp 8" in error.value.fix and "4+" not in error.value.fix


def test_an_unknown_hub_model_offline_fails_at_once_with_the_reason(no_network):
    import time

    started = time.monotonic()
    with pytest.raises(CourseError, match="offline: huggingface.co cannot be resolved"):
        load_config("nobody-at-all/no-such-model-xyz")
    with pytest.raises(CourseError, match="offline"):
        helpers.load_tokenizer("nobody-at-all/no-such-model-xyz")
    assert time.monotonic() - started < 5


def test_the_network_check_is_bounded_and_sees_a_reachable_hub(monkeypatch):
    import socket
    import threading
    import time

    from helpers import network

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as server:  # a "hub" on this machine: reachable without any network
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert network.hub_offline_reason(refresh=True) is None
    release = threading.Event()
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: release.wait(30) and real(*a, **k))  # a resolver that hangs
    monkeypatch.setattr(network, "HUB_CHECK_TIMEOUT_S", 0.3)
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    try:
        started = time.monotonic()
        assert "no answer from huggingface.co:443 within 0.3 s" in network.hub_offline_reason(refresh=True)
        assert time.monotonic() - started < 2
    finally:
        release.set()
        network.forget()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert network.hub_offline_reason() == "HF_HUB_OFFLINE=1 is set"
