"""helpers/diagrams.py draws what the config and the planner say: checked by what is drawn (ids and texts of the
figure's parts), not by pixels."""

from __future__ import annotations

import copy

import pytest
from transformers import AutoConfig

import helpers
from helpers import diagrams
from helpers.accelerators import ACCELERATORS
from helpers.units import GB

RELEASED = AutoConfig.from_pretrained(helpers.GROK2_RELEASED_CONFIG)
TINY = AutoConfig.from_pretrained(helpers.TINY_MODEL_DIR)
GROK = helpers.plan_profile("grok-2")


def shapes(figure, prefix):
    """Ids of the drawn shapes (not their text labels) whose id starts with prefix."""
    return [gid for gid in diagrams.cells(figure, prefix) if not gid.endswith(":label")]


@pytest.mark.parametrize("config", [RELEASED, TINY], ids=["grok-2.5", "tiny"])
def test_the_layer_has_every_part_with_the_configs_numbers(config):
    figure = diagrams.grok2_layer(config)
    experts = shapes(figure, "expert:")
    assert len(experts) == config.num_local_experts
    assert len([e for e in experts if e.endswith(":chosen")]) == config.num_experts_per_tok
    assert len(shapes(figure, "route:")) == config.num_experts_per_tok + 1  # the chosen experts and the dense MLP
    for part in ("pre_attn_norm", "attention", "post_attn_norm", "pre_moe_norm", "router", "dense_mlp", "sum",
                 "post_moe_norm", "residual:attention", "residual:moe", "skip:attention", "skip:moe"):
        assert shapes(figure, part), part
    text = "\n".join(diagrams.texts(figure))
    for expected in (f"{config.num_attention_heads} query heads share {config.num_key_value_heads} key/value heads",
                     f"capped {config.attn_logit_softcapping:g}·tanh", f"capped {config.router_logit_softcapping:g}·tanh",
                     f"top {config.num_experts_per_tok} of {config.num_local_experts}", "not renormalised",
                     f"log2({config.attn_temperature_len})", "× 1/√2", f"→{config.intermediate_size}→",
                     f"→{config.moe_intermediate_size}→", f"{config.num_hidden_layers} layers"):
        assert expected in text, expected


def test_the_layer_highlights_the_experts_asked_for_and_refuses_others():
    figure = diagrams.grok2_layer(RELEASED, chosen=(3, 6))
    assert [e for e in shapes(figure, "expert:") if e.endswith(":chosen")] == ["expert:3:chosen", "expert:6:chosen"]
    with pytest.raises(ValueError, match="2 distinct experts"):
        diagrams.grok2_layer(RELEASED, chosen=(3,))
    with pytest.raises(ValueError, match="among 0..7"):
        diagrams.grok2_layer(RELEASED, chosen=(3, 8))
    with pytest.raises(ValueError, match="distinct"):
        diagrams.grok2_layer(RELEASED, chosen=(3, 3))


def test_without_the_residual_moe_there_is_no_dense_mlp_and_no_square_root():
    config = copy.deepcopy(RELEASED)
    config.residual_moe = False
    figure = diagrams.grok2_layer(config)
    assert not shapes(figure, "dense_mlp") and "1/√2" not in "\n".join(diagrams.texts(figure))


def test_the_tensor_parallel_slices_match_the_released_files():
    figure = diagrams.tensor_parallel_slices(RELEASED)
    for name in ("w1", "w2", "w3"):
        assert len(shapes(figure, f"slice:{name}:")) == 8
    assert len(shapes(figure, "rank:")) == 8
    text = "\n".join(diagrams.texts(figure))
    assert "pytorch_model-00006-TP-rrr" in text and "16384 = 8 × 2048" in text
    slice_file = 64 * 8 * 2048 * 8192 * 2
    common = GROK.weight_bytes("bf16") - 24 * slice_file  # 3 files x 8 ranks of slices, the rest is TP-common
    assert f"3 × {slice_file / GB:,.1f} GB" in text and f"{common / GB:,.1f} GB" in text
    with pytest.raises(ValueError, match="does not split"):
        diagrams.tensor_parallel_slices(RELEASED, tp=3)


def test_what_fits_where_follows_the_planners_rule_in_every_cell():
    figure = diagrams.what_fits_where(GROK)
    grid = diagrams.fit_grid(GROK)
    for precision, row in grid.items():
        for j, fit in enumerate(row):
            planner_says = GROK.gpus_needed(fit.accelerator.memory_bytes, precision) <= fit.count
            assert fit.fits == planner_says, fit.describe()
            state = shapes(figure, f"cell:{precision}:{j}:")
            assert len(state) == 1 and state[0].endswith(":fits") == fit.fits, (state, fit.describe())
    text = "\n".join(diagrams.texts(figure))
    assert "FP8 weight-only" in text and "FP8 native" in text  # from helpers.accelerators, not typed here
    assert f"{GROK.weight_bytes('nf4') / GB:,.1f} GB" in text


def test_one_plan_one_margin():
    """The margin is the planner's own rule: >= 0 exactly when gpus_needed says the GPUs suffice."""
    h100 = ACCELERATORS["H100"].memory_bytes
    for precision in ("bf16", "fp8", "nf4"):
        needed = GROK.gpus_needed(h100, precision)
        assert GROK.margin_bytes(h100, needed, precision) >= 0 > GROK.margin_bytes(h100, needed - 1, precision)
    # two "80 GB" H100s hold 80 GiB each: 4-bit Grok 2.5 and an 8K-token cache fit, with the planner's headroom
    two = diagrams.fit_grid(GROK, machines=(("H100", 2),), precisions=("nf4",))["nf4"][0]
    assert two.fits and "fits, with" in two.describe()
    assert not diagrams.fit_grid(GROK, machines=(("H100", 1),), precisions=("nf4",))["nf4"][0].fits


def test_layer_split_picture_is_drawn_from_the_config():
    figure = diagrams.draw_layer_split(RELEASED)
    gids = {a.get_gid() for a in figure.findobj() if a.get_gid()}
    assert {f"tp:rank:{r}" for r in range(8)} <= gids and {"tp:all_reduce_1", "tp:all_reduce_2"} <= gids
    labels = {a.get_gid(): a.get_text() for a in figure.findobj() if (a.get_gid() or "").endswith(":label")}
    assert labels["tp:q_proj:7:label"] == "heads 56-63" and labels["tp:kv_proj:3:label"] == "KV head 3"
    assert labels["tp:experts:1:label"] == "2,048-4,095\nfiles TP-001"
    assert "8,192 values per token" in labels["tp:all_reduce_2:label"]


def test_layer_split_picture_shows_shared_heads_and_refuses_what_the_split_refuses():
    from helpers.grok2.tensor_parallel import TensorParallelError

    labels = {a.get_gid(): a.get_text() for a in diagrams.draw_layer_split(TINY, tp_size=8).findobj()
              if (a.get_gid() or "").endswith(":label")}
    assert labels["tp:q_proj:0:label"] == labels["tp:q_proj:1:label"] == "head 0"  # 4 heads, 8 ranks: pairs share
    assert labels["tp:o_proj:0:label"] == "0-7" and labels["tp:o_proj:1:label"] == "8-15"  # each its own columns
    with pytest.raises(TensorParallelError, match="4 attention heads"):
        diagrams.draw_layer_split(TINY, tp_size=3)
