"""Tensor-parallel Grok 2 (helpers.grok2.tensor_parallel, helpers.parallelism): real torchrun runs at TP 1, 2 and 4
from the released layout, equal to one process; the naive TP 4 load caught; what each rank read and sent; the
communication formula (helpers.machines.communication) and its projection.

Each torchrun launch starts one Python per rank, and each imports torch and transformers (seconds per process on 2
cores): that, not the tiny model, is what the launches here cost. So one launch of 4 processes runs TP 4 (correct and
naive) and then TP 2 (two groups of 2 side by side), and one launch of 1 process runs TP 1. Everything else runs in
this process.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import helpers
from helpers.errors import CourseError
from helpers.grok2 import Grok2Config, save_in_released_layout
from helpers.download import LFSPointer
from helpers.evaluation import max_abs_difference
from helpers.grok2.tensor_parallel import (
    Collectives,
    MissingShardError,
    RowParallelOutput,
    TensorParallelError,
    check_tensor_parallel,
    load_rank,
    parse_plan,
    rank_shard,
    slice_count,
)
from helpers.machines import plan_routes
from helpers.machines.communication import bytes_sent_per_gpu, collectives_per_token, project_decode
from helpers.parallelism import LOGIT_TOLERANCE, run_tensor_parallel, single_process_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NEW_TOKENS = 4
COMMON = 15  # TP-common files of the released layout


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The tiny Grok 2, saved exactly as xAI released Grok 2 (15 TP-common files + 3 x 8 slice files)."""
    return save_in_released_layout(helpers.load_model(helpers.TINY_MODEL_DIR, verbose=False),
                                   tmp_path_factory.mktemp("tp") / "released")


@pytest.fixture(scope="module")
def ids(tokenizer):
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "How many experts does Grok 2 have?"}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return chat["input_ids"]


@pytest.fixture(scope="module")
def reference(released, ids):
    return single_process_logits(released, ids, new_tokens=NEW_TOKENS)


def _processes_under(folder: Path) -> list[str]:
    """Command lines of the live processes of launches whose files are in `folder` (torchrun and its ranks name it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in line:
                found.append(line)
    return found


# ---------------------------------------------------------------------------------------------- torchrun, for real


@pytest.fixture(scope="module")
def tp4(released, ids):
    """One launch of 4 processes: TP 4 correct then naive (one group), then TP 2 correct and naive side by side."""
    return run_tensor_parallel(released, 4, ids, modes=("correct", "naive"), new_tokens=NEW_TOKENS,
                               then=[(2, ("correct", "naive"))])


def test_tp1_under_torchrun_equals_one_process(released, ids, reference):
    logits, tokens = reference
    run = run_tensor_parallel(released, 1, ids, new_tokens=NEW_TOKENS)  # --nproc-per-node 1: one rank, no peer
    correct = run["correct"]
    assert run.backend == "gloo" and run.command.startswith("torchrun --standalone --nproc-per-node 1 -m ")
    assert max_abs_difference(correct.logits, logits) <= LOGIT_TOLERANCE
    assert torch.equal(correct.tokens, tokens) and correct.replicas_identical
    (rank,) = correct.ranks  # one rank reads every file and sends nothing
    assert len(rank["files"]) == COMMON + 3 * 8 and correct.collectives == []


def test_tp2_under_torchrun_equals_one_process(tp4, reference):
    logits, tokens = reference
    correct = tp4.at(2, "correct")
    assert tp4.backend == "gloo" and tp4.command.startswith("torchrun --standalone --nproc-per-node 4 -m ")
    assert max_abs_difference(correct.logits, logits) <= LOGIT_TOLERANCE
    assert torch.equal(correct.tokens, tokens) and correct.replicas_identical
    for rank in correct.ranks:  # every TP-common file, and its own half of the slice files (4 of 8), nothing else
        mine = {f"pytorch_model-{n:05d}-TP-{s:03d}.safetensors" for n in (6, 7, 8)
                for s in range(4 * rank["rank"], 4 * rank["rank"] + 4)}
        assert {f for f in rank["files"] if "-TP-common" not in f} == mine
        assert sum("-TP-common" in f for f in rank["files"]) == COMMON
    assert max_abs_difference(tp4.at(2, "naive").logits, logits) > 1000 * LOGIT_TOLERANCE  # the group beside it


def test_tp4_equals_one_process_and_each_rank_reads_its_share(released, tp4, reference):
    correct = tp4["correct"]
    assert max_abs_difference(correct.logits, reference[0]) <= LOGIT_TOLERANCE
    assert torch.equal(correct.tokens, reference[1]) and correct.replicas_identical
    for name in ("pytorch_model-00000-TP-common.safetensors", "pytorch_model-00007-TP-005.safetensors"):
        # the embedding split by vocabulary rows, a slice file read by one rank only: each byte read exactly once
        size = (released / name).stat().st_size
        read = [rank["files"].get(name, 0) for rank in correct.ranks]
        assert sum(read) < size and sum(read) > 0.9 * size and sum(1 for b in read if b) == (4 if "common" in name else 1)
    assert correct.ranks[2]["files"]["pytorch_model-00006-TP-005.safetensors"] > 0  # rank 2 = slices 4 and 5


def test_naive_tp4_load_misses_half_of_every_expert_and_the_comparison_catches_it(tp4, reference):
    naive = tp4["naive"]
    for rank in naive.ranks:  # ranks 0-3 each found one slice file where they needed two
        assert {f for f in rank["files"] if "-TP-common" not in f} == {
            f"pytorch_model-{n:05d}-TP-{rank['rank']:03d}.safetensors" for n in (6, 7, 8)}
    assert not any(f.endswith(f"-TP-{s:03d}.safetensors") for r in naive.ranks for f in r["files"] for s in range(4, 8))
    assert max_abs_difference(naive.logits, reference[0]) > 1000 * LOGIT_TOLERANCE


def test_bytes_all_reduced_are_counted_and_match_the_formula(tp4, ids):
    config = Grok2Config.from_pretrained(helpers.TINY_MODEL_DIR)
    counted = tp4["correct"]
    formula = collectives_per_token(config, 4, bytes_per_value=4)  # the tiny model runs in fp32
    assert counted.bytes_all_reduced_per_token_per_layer() == formula["all_reduce_bytes_per_layer"] == 2 * 64 * 4
    per_token = counted.bytes_per_token()
    assert per_token["all_reduce"] == formula["all_reduce_bytes"]
    assert per_token["all_gather"] == formula["all_gather_bytes_per_rank"]
    assert sum(c["op"] == "all_reduce" for c in counted.collectives) == formula["all_reduces"]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads process command lines from /proc")
def test_a_launch_past_its_deadline_is_stopped_and_leaves_no_process(released, ids, tmp_path):
    with pytest.raises(CourseError, match="did not finish"):
        run_tensor_parallel(released, 2, ids, timeout_s=2, scratch_dir=tmp_path)  # the ranks are still importing
    assert _processes_under(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads process command lines from /proc")
def test_a_rank_that_fails_after_the_launch_stops_the_launch_and_leaves_no_process(released, ids, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(released, broken)
    (broken / "pytorch_model-00006-TP-007.safetensors").write_bytes(b"not a safetensors file")  # rank 1's, at TP 2
    with pytest.raises(CourseError, match="SafetensorError") as error:  # rank 1's own error, named
        run_tensor_parallel(broken, 2, ids, timeout_s=120, scratch_dir=tmp_path)  # rank 0 waits for it in an all-reduce
    assert "[rank1]" in str(error.value)
    assert _processes_under(tmp_path) == [] and _processes_under(broken) == []


# ---------------------------------------------------------------------------------------------- in this process


@pytest.mark.parametrize("config", [Grok2Config.from_pretrained(helpers.TINY_MODEL_DIR),
                                    Grok2Config.from_pretrained(helpers.GROK2_RELEASED_CONFIG)], ids=["tiny", "grok-2"])
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_rank_shards_partition_every_split_part(config, tp):
    shards = [rank_shard(config, tp, r, slices=8) for r in range(tp)]
    group = config.num_attention_heads // config.num_key_value_heads
    for s in shards:  # a rank's query heads read the KV heads it holds
        assert s.kv_heads[0] * group <= s.q_heads[0] and s.q_heads[1] <= s.kv_heads[1] * group
    for part, total in (("o_columns", config.num_attention_heads * config.head_dim),
                        ("mlp_rows", config.intermediate_size), ("vocab_rows", config.vocab_size)):
        spans = [getattr(s, part) for s in shards]
        assert spans[0][0] == 0 and spans[-1][1] == total and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert sorted(f for s in shards for f in s.slice_files) == list(range(8))


@pytest.mark.parametrize("tp, constraint", [(3, "4 attention heads"), (16, "8 expert slice files"),
                                            (0, "whole number"), (6, "attention heads")])
def test_a_tp_size_that_cannot_split_is_refused_naming_the_constraint(released, ids, tp, constraint):
    config = Grok2Config.from_pretrained(released)
    with pytest.raises(TensorParallelError, match=constraint) as error:
        check_tensor_parallel(config, tp, 8)
    assert isinstance(error.value, ValueError) and "1, 2, 4, 8" in error.value.fix
    with pytest.raises(CourseError, match=constraint):  # refused before any process starts
        run_tensor_parallel(released, tp, ids)


def test_plans_split_the_processes_into_groups():
    assert parse_plan("8:correct", 8) == (8, [["correct"]])
    assert parse_plan("4:naive,correct", 8) == (4, [["naive"], ["correct"]])  # two groups of 4, side by side
    assert parse_plan("4:correct,naive", 4) == (4, [["correct", "naive"]])  # one group, one mode after the other
    for bad in ("3:correct", "4:naive", "4:fast", "four"):
        with pytest.raises(ValueError, match="--plan"):
            parse_plan(bad, 8)


def test_then_must_fit_the_launch(released, ids):
    with pytest.raises(CourseError, match="form 8//3 groups"):
        run_tensor_parallel(released, 8, ids, then=[(3, ("correct",))])
    with pytest.raises(CourseError, match="Unknown load mode"):
        run_tensor_parallel(released, 4, ids, modes=("fast",))


def test_missing_last_slice_files_are_counted_from_the_expert_width_and_named(released, ids, tmp_path):
    broken = tmp_path / "seven"
    shutil.copytree(released, broken)
    names = [f"pytorch_model-{number:05d}-TP-007.safetensors" for number in (6, 7, 8)]
    for name in names:
        (broken / name).unlink()
    assert slice_count(broken) == 8  # the experts' width (64) over one slice's (8), not the 7 files left
    with pytest.raises(CourseError, match=f"3 files are missing from {broken}: {', '.join(names)}; rank 0 of tensor "
                                          f"parallelism 1 must read them") as error:
        run_tensor_parallel(broken, 1, ids)
    assert f"git lfs pull --include '{','.join(names)}'" in error.value.fix
    mismatched = Grok2Config.from_pretrained(broken)
    mismatched.moe_intermediate_size = 60  # a config from another checkpoint: slices 8 wide do not divide 60
    with pytest.raises(MissingShardError, match="not from one checkpoint"):
        slice_count(broken, mismatched)


def test_a_slice_file_still_an_lfs_pointer_is_named_before_launch(released, ids, tmp_path):
    broken = tmp_path / "pointers"
    shutil.copytree(released, broken)
    pointer = LFSPointer(oid="0" * 64, size=(released / "pytorch_model-00006-TP-000.safetensors").stat().st_size)
    for name in ("pytorch_model-00006-TP-000.safetensors", "pytorch_model-00007-TP-003.safetensors"):
        (broken / name).write_text(pointer.text())  # a clone whose git lfs pull skipped these files
    with pytest.raises(CourseError, match="2 file.* still Git LFS pointers, not weights: pytorch_model-00006-TP-000"
                                          r"\.safetensors, pytorch_model-00007-TP-003\.safetensors") as error:
        run_tensor_parallel(broken, 2, ids)  # refused before torchrun starts: no rank dies on "HeaderTooLarge"
    assert ("git lfs pull --include 'pytorch_model-00006-TP-000.safetensors,pytorch_model-00007-TP-003.safetensors'"
            in error.value.fix)
    with pytest.raises(MissingShardError, match="00006-TP-000.safetensors is not a readable safetensors file"):
        slice_count(broken)  # the rank's own check, without helpers.download (helpers.grok2 imports nothing else)


def test_missing_and_unpulled_files_are_named_by_one_formatter():
    """The rank's check (helpers.grok2, which imports nothing else of helpers) and the launcher's pointer check
    (helpers.parallelism) name files and write the `git lfs pull` fix the same way, from one place."""
    import helpers.parallelism as parallelism
    from helpers.grok2.tensor_parallel_plan import NAMED_FILES, name_files, pull_fix

    assert parallelism.name_files is name_files and parallelism.pull_fix is pull_fix
    names = [f"pytorch_model-00007-TP-{s:03d}.safetensors" for s in range(NAMED_FILES + 2)]
    assert name_files(names) == ", ".join(names[:NAMED_FILES]) + " and 2 more"
    assert name_files(names[:NAMED_FILES]) == ", ".join(names[:NAMED_FILES])
    assert pull_fix(names) == ("pull them in that folder: git lfs pull --include 'pytorch_model-*-TP-*.safetensors' "
                               "(lesson 01).")
    assert pull_fix(names[:1]) == f"pull it in that folder: git lfs pull --include '{names[0]}' (lesson 01)."
    assert f"--include '{','.join(names[:2])}'" in pull_fix(names[:2])


def test_o_proj_columns_that_do_not_split_are_refused():
    config = Grok2Config(num_attention_heads=4, num_key_value_heads=2, head_dim=5, hidden_size=20,
                         intermediate_size=64, moe_intermediate_size=32, vocab_size=96, num_hidden_layers=1)
    with pytest.raises(TensorParallelError, match=r"o_proj's 20 input columns \(4 heads x 5\) into 8 equal blocks"):
        check_tensor_parallel(config, 8, 8)  # 8 is a multiple of the heads, but 20 columns do not split 8 ways
    check_tensor_parallel(config, 4, 8)
    with pytest.raises(ValueError, match="outside its heads' 5 output values"):
        RowParallelOutput(torch.zeros(20, 3), offset=3, heads_width=5)  # would have dropped a column silently


def test_too_few_kv_heads_for_the_size_is_refused():
    config = Grok2Config(num_attention_heads=12, num_key_value_heads=6, head_dim=4, hidden_size=48,
                         intermediate_size=96, moe_intermediate_size=32, vocab_size=96, num_hidden_layers=1)
    with pytest.raises(TensorParallelError, match="6 key/value heads"):
        check_tensor_parallel(config, 4, 8)  # 12 query heads split 4 ways, but 6 KV heads do not


def test_a_missing_slice_file_is_named(released, ids, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(released, broken)
    (broken / "pytorch_model-00007-TP-005.safetensors").unlink()
    with pytest.raises(CourseError, match=r"pytorch_model-00007-TP-005\.safetensors is missing: rank 1 of tensor "
                                          r"parallelism 2") as error:
        run_tensor_parallel(broken, 2, ids)
    assert "git lfs pull --include 'pytorch_model-00007-TP-005.safetensors'" in error.value.fix
    with pytest.raises(MissingShardError) as raw:
        load_rank(broken, 2, 1, Collectives())
    assert isinstance(raw.value, FileNotFoundError)
    load_rank(broken, 2, 0, Collectives())  # rank 0 needs slices 0-3 only: it loads


# ---------------------------------------------------------------------------------------------- Grok 2.5, projected


def test_communication_projection_for_grok_2_on_8_h100():
    config = Grok2Config.from_pretrained(helpers.GROK2_RELEASED_CONFIG)
    projection = project_decode(config)
    comm = projection.communication
    assert comm["all_reduce_bytes_per_layer"] == 2 * 8192 * 2  # two all-reduces of 8,192 bf16 values per layer
    assert comm["all_reduces"] == 2 * 64 + 1 and comm["all_reduce_bytes"] == 129 * 16384
    assert projection.latency_bound_s == pytest.approx(130 * 5.7e-6)
    assert projection.bandwidth_bound_s < projection.latency_bound_s / 10  # at batch 1 latency, not bandwidth
    assert 200 < projection.tokens_per_s(with_communication=False) < 260  # lesson 06's FP8 memory roofline
    assert projection.tokens_per_s() < projection.tokens_per_s(with_communication=False)
    assert f"({projection.latency_bound_s / projection.memory_bound_s:.0%} slower)" in projection.summary()[-1]
    # the "% slower" and the time with communication use the same bound, the larger one, whichever it is
    slow_link = replace(projection, bandwidth_bound_s=3 * projection.latency_bound_s)  # a link slow enough to dominate
    assert slow_link.with_communication_s == slow_link.memory_bound_s + slow_link.bandwidth_bound_s
    assert slow_link.slowdown == pytest.approx(slow_link.bandwidth_bound_s / slow_link.memory_bound_s)
    assert f"({slow_link.slowdown:.0%} slower)" in slow_link.summary()[-1]


def test_the_machine_planner_charges_the_same_communication_formula():
    config = Grok2Config.from_pretrained(helpers.GROK2_RELEASED_CONFIG)
    route = plan_routes("8 x H100 80 GB").route("sglang-fp8-tp8")
    (link,) = [m for m in route.memories if m.kind == "nvlink"]
    assert link.read_per_token == bytes_sent_per_gpu(config, 8)  # embedding all-reduce and logits all-gather included
    comm = collectives_per_token(config, 8, 2)
    assert link.read_per_token == comm["all_reduce_bytes"] * 2 * 7 / 8 + comm["all_gather_bytes_per_rank"] * 7
    assert bytes_sent_per_gpu(config, 1) == 0


def test_no_process_of_these_tests_outlives_them(released):
    assert not Path("/proc/self/cmdline").exists() or _processes_under(released.parent) == []
