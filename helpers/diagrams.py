"""Pictures drawn from the config, so they stay true: one Grok 2 layer, the 8 tensor-parallel slices of the released
files, one layer split over tensor-parallel ranks, and what fits where (memory per precision against common GPUs).

    helpers.diagrams.grok2_layer(config)            # lesson 02
    helpers.diagrams.tensor_parallel_slices(config)  # lesson 01
    helpers.diagrams.draw_layer_split(config, 8)     # lesson 02: one layer over 8 tensor-parallel ranks
    helpers.diagrams.what_fits_where(plan)           # lesson 00

Every label is computed from the config or the planner, never typed. Each function returns a matplotlib `Figure`
(displayed when it is the last line of a cell) whose parts carry ids (`artist.get_gid()`), so the tests can check
*what* is drawn ("8 experts, 2 of them chosen") rather than pixels. GPU facts come from `helpers.accelerators`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .accelerators import ACCELERATORS, Accelerator
from .memory import GPU_USABLE_FRACTION
from .units import GB, format_bytes

# Colours: one per role, the same in every picture.
NORM, ATTENTION, ROUTER, EXPERT, CHOSEN, DENSE, SUM = ("#d9d9d9", "#9ecae1", "#fdd0a2", "#f0f0f0", "#fd8d3c",
                                                       "#a1d99b", "#ffffff")
FITS, TIGHT, DOES_NOT_FIT = "#a1d99b", "#fee391", "#fc9272"


def _figure(width: float, height: float):
    """A figure outside pyplot's list of open figures: shown once when a cell returns it, never twice."""
    import matplotlib.pyplot as plt  # also registers the notebook's inline display of figures

    figure, axis = plt.subplots(figsize=(width, height))
    plt.close(figure)
    axis.set_axis_off()
    return figure, axis


def _box(axis, x, y, w, h, text, colour, gid, size=9, weight="normal"):
    from matplotlib.patches import FancyBboxPatch

    patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.08", facecolor=colour,
                           edgecolor="#444444", linewidth=1.0, gid=gid)
    axis.add_patch(patch)
    axis.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight, gid=gid + ":label")
    return patch


def _arrow(axis, start, end, gid, bend: str = "arc3"):
    axis.annotate("", xy=end, xytext=start, gid=gid,
                  arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.0, connectionstyle=bend))


# ------------------------------------------------------------------------------------------------ one Grok 2 layer


def layer_labels(config) -> dict[str, str]:
    """The text of each part of one layer, from the config (what `grok2_layer` writes in its boxes)."""
    c = config
    cap = lambda value: f"{value:g}·tanh(x/{value:g})"  # noqa: E731
    return {
        "pre_attn_norm": f"pre_attn_norm (RMSNorm, eps {c.rms_norm_eps:g})",
        "attention": (f"attention: {c.num_attention_heads} query heads share {c.num_key_value_heads} key/value heads "
                      f"of {c.head_dim}; RoPE θ = {c.rope_theta:,.0f}\n"
                      f"scores × 1/√{c.head_dim}, capped {cap(c.attn_logit_softcapping)}; "
                      f"× log2(p)/log2({c.attn_temperature_len}) for positions p > {c.attn_temperature_len}"),
        "post_attn_norm": "post_attn_norm (RMSNorm)",
        "pre_moe_norm": "pre_moe_norm (RMSNorm)",
        "router": (f"router {c.hidden_size}→{c.num_local_experts}, capped {cap(c.router_logit_softcapping)}, softmax: "
                   f"top {c.num_experts_per_tok} of {c.num_local_experts} (weights not renormalised)"),
        "expert": f"GeGLU {c.hidden_size}→{c.moe_intermediate_size}→{c.hidden_size}",
        "dense": (f"dense MLP, every token\nGeGLU {c.hidden_size}→{c.intermediate_size}→{c.hidden_size}"
                  if c.residual_moe else ""),
        "sum": ("(Σ router weight × expert + dense MLP) × 1/√2" if c.residual_moe else "Σ router weight × expert"),
        "post_moe_norm": "post_moe_norm (RMSNorm)",
        "residual": "+",
    }


def grok2_layer(config, chosen: tuple[int, ...] | None = None):
    """One decoder layer of Grok 2 as the config builds it: the sandwich norms, attention with its caps and
    temperature, the router choosing `num_experts_per_tok` of `num_local_experts` experts, the dense MLP beside them,
    the 1/√2. `chosen`: the experts to highlight (default: the first ones; which ones depends on the token)."""
    c = config
    labels = layer_labels(c)
    n, k = c.num_local_experts, c.num_experts_per_tok
    chosen = tuple(range(k)) if chosen is None else tuple(chosen)
    if len(set(chosen)) != k or len(chosen) != k or not all(0 <= e < n for e in chosen):
        raise ValueError(f"chosen must name {k} distinct experts among 0..{n - 1}, got {chosen}")
    figure, axis = _figure(11, 9.5)
    axis.set_xlim(0, 12)
    axis.set_ylim(0, 13.2)
    axis.set_title(f"One of the {c.num_hidden_layers} layers of Grok 2 (hidden size {c.hidden_size})", fontsize=11)
    centre = 5.0
    rows = {"in": 12.5, "pre_attn_norm": 11.6, "attention": 10.2, "post_attn_norm": 8.9, "add1": 8.2,
            "pre_moe_norm": 7.4, "router": 6.3, "experts": 4.6, "sum": 3.0, "post_moe_norm": 2.0, "add2": 1.2,
            "out": 0.4}
    axis.text(centre, rows["in"], "h (from the layer below)", ha="center", fontsize=9, gid="input")
    _box(axis, 2.5, rows["pre_attn_norm"] - 0.3, 5, 0.6, labels["pre_attn_norm"], NORM, "pre_attn_norm")
    _box(axis, 0.3, rows["attention"] - 0.65, 9.4, 1.3, labels["attention"], ATTENTION, "attention", size=8.5)
    _box(axis, 2.5, rows["post_attn_norm"] - 0.3, 5, 0.6, labels["post_attn_norm"], NORM, "post_attn_norm")
    _box(axis, centre - 0.3, rows["add1"] - 0.25, 0.6, 0.5, "+", SUM, "residual:attention", size=12, weight="bold")
    _box(axis, 2.5, rows["pre_moe_norm"] - 0.3, 5, 0.6, labels["pre_moe_norm"], NORM, "pre_moe_norm")
    _box(axis, 0.3, rows["router"] - 0.35, 7.0, 0.7, labels["router"], ROUTER, "router", size=7.5)
    width = 7.0 / n
    for e in range(n):
        picked = e in chosen
        _box(axis, 0.3 + e * width, rows["experts"] - 0.6, width * 0.9, 1.2, f"expert {e}", CHOSEN if picked else
             EXPERT, f"expert:{e}:{'chosen' if picked else 'idle'}", size=7.5, weight="bold" if picked else "normal")
    axis.text(0.3 + 3.5, rows["experts"] - 0.95, f"each expert: {labels['expert']}", ha="center", fontsize=8,
              gid="expert-size")
    if c.residual_moe:
        _box(axis, 7.6, rows["experts"] - 0.6, 2.1, 1.2, labels["dense"], DENSE, "dense_mlp", size=7.5)
    _box(axis, 0.3, rows["sum"] - 0.3, 9.4, 0.6, labels["sum"], SUM, "sum", size=9)
    _box(axis, 2.5, rows["post_moe_norm"] - 0.3, 5, 0.6, labels["post_moe_norm"], NORM, "post_moe_norm")
    _box(axis, centre - 0.3, rows["add2"] - 0.25, 0.6, 0.5, "+", SUM, "residual:moe", size=12, weight="bold")
    axis.text(centre, rows["out"] - 0.2, "h (to the layer above)", ha="center", fontsize=9, gid="output")
    # The main path, top to bottom, and the two residual connections on the right.
    path = [("in", "pre_attn_norm", 0.3), ("pre_attn_norm", "attention", 0.65), ("attention", "post_attn_norm", 0.3),
            ("post_attn_norm", "add1", 0.25), ("add1", "pre_moe_norm", 0.3), ("pre_moe_norm", "router", 0.35),
            ("sum", "post_moe_norm", 0.3), ("post_moe_norm", "add2", 0.25), ("add2", "out", 0.0)]
    for start, end, gap in path:
        _arrow(axis, (centre, rows[start] - (0.1 if start == "in" else 0.3)), (centre, rows[end] + gap),
               f"flow:{start}->{end}")
    for e in chosen:
        x = 0.3 + e * width + width * 0.45
        _arrow(axis, (x, rows["router"] - 0.35), (x, rows["experts"] + 0.6), f"route:{e}")
        _arrow(axis, (x, rows["experts"] - 0.6), (x, rows["sum"] + 0.3), f"combine:{e}")
    if c.residual_moe:
        _arrow(axis, (7.5, rows["pre_moe_norm"]), (8.65, rows["experts"] + 0.6), "route:dense",
               bend="angle,angleA=0,angleB=90,rad=0")
        _arrow(axis, (8.65, rows["experts"] - 0.6), (8.65, rows["sum"] + 0.3), "combine:dense")
    for name, (top, bottom) in {"attention": (rows["in"] + 0.1, rows["add1"]),
                                "moe": (rows["add1"] - 0.25, rows["add2"])}.items():
        axis.annotate("", xy=(centre + 0.3, bottom), xytext=(10.6, top), gid=f"skip:{name}",
                      arrowprops=dict(arrowstyle="-|>", color="#888888", lw=1.0, linestyle="--",
                                      connectionstyle="angle,angleA=-90,angleB=180,rad=0"))
    axis.text(10.7, (rows["in"] + rows["add1"]) / 2, "residual", rotation=90, fontsize=8, color="#666666",
              va="center")
    axis.text(10.7, (rows["add1"] + rows["add2"]) / 2, "residual", rotation=90, fontsize=8, color="#666666",
              va="center")
    return figure


# ---------------------------------------------------------------------------------- the released files, 8 slices


def tensor_parallel_slices(config, tp: int = 8, bytes_per_weight: int = 2):
    """How the released checkpoint cuts every expert for `tp` GPUs: w1 and w3 by rows, w2 by columns, slice r of
    every expert of every layer in the files `...-TP-{r:03d}.safetensors`; everything else whole in `...-TP-common`."""
    from .memory import grok2_parameter_breakdown

    c = config
    if c.moe_intermediate_size % tp:
        raise ValueError(f"moe_intermediate_size {c.moe_intermediate_size} does not split into {tp} slices")
    rows = c.moe_intermediate_size // tp
    parts = grok2_parameter_breakdown(c)
    slice_file_bytes = c.num_hidden_layers * c.num_local_experts * rows * c.hidden_size * bytes_per_weight
    common_bytes = (sum(parts.values()) - parts["experts"]) * bytes_per_weight
    figure, axis = _figure(12, 5.6)
    axis.set_xlim(0, 12)
    axis.set_ylim(0, 6.4)
    axis.set_title(f"Each expert cut into {tp} slices, one per GPU rank (moe_intermediate_size "
                   f"{c.moe_intermediate_size} = {tp} × {rows})", fontsize=11)
    colours = [f"C{r % 10}" for r in range(tp)]
    from matplotlib.patches import Rectangle

    matrices = {"w1": ("rows", f"[{c.moe_intermediate_size}, {c.hidden_size}]", 6),
                "w2": ("columns", f"[{c.hidden_size}, {c.moe_intermediate_size}]", 7),
                "w3": ("rows", f"[{c.moe_intermediate_size}, {c.hidden_size}]", 8)}
    for m, (name, (cut, shape, number)) in enumerate(matrices.items()):
        x0, y0, w, h = 0.4 + m * 2.6, 1.6, 2.0, 3.6
        for r in range(tp):
            if cut == "rows":
                cell = (x0, y0 + h - (r + 1) * h / tp, w, h / tp)
            else:
                cell = (x0 + r * w / tp, y0, w / tp, h)
            axis.add_patch(Rectangle(cell[:2], cell[2], cell[3], facecolor=colours[r], edgecolor="white", alpha=0.8,
                                     gid=f"slice:{name}:{r}"))
        axis.text(x0 + w / 2, y0 + h + 0.35, f"expert E's {name} {shape}\ncut by {cut}", ha="center", fontsize=8.5,
                  gid=f"matrix:{name}")
        axis.text(x0 + w / 2, y0 - 0.35, f"pytorch_model-{number:05d}-TP-rrr", ha="center", fontsize=7.5,
                  gid=f"file:{name}")
    for r in range(tp):
        axis.text(8.3, 5.0 - r * 0.42, f"rank {r}: TP-{r:03d}", color=colours[r], fontsize=8.5, weight="bold",
                  gid=f"rank:{r}")
    lines = [f"every rank reads all the TP-common files: {common_bytes / GB:,.1f} GB",
             "(embeddings, LM head, attention, dense MLP, norms, routers)",
             f"plus its own 3 slice files: 3 × {slice_file_bytes / GB:,.1f} GB",
             f"({c.num_hidden_layers} layers × {c.num_local_experts} experts × {rows} × {c.hidden_size} "
             f"× {bytes_per_weight} bytes each)",
             f"= {(common_bytes + 3 * slice_file_bytes) / GB:,.1f} GB read by each of the {tp} ranks"]
    for i, line in enumerate(lines):
        axis.text(8.3, 1.55 - i * 0.33, line, fontsize=7.5, gid=f"bytes:{i}")
    return figure


# ------------------------------------------------------------------------------- one layer split over the ranks


def _heads(word: str, heads: tuple[int, int], span) -> str:
    return f"{word}{'s' if heads[1] - heads[0] > 1 else ''} {span(*heads)}"


def _layer_rows(config, tp_size: int, slices: int) -> list[tuple[str, str, str, list[str] | str]]:
    """(row id, what, kind, one label per rank, or one label for a collective), from `rank_shard` itself."""
    from .grok2.tensor_parallel_plan import rank_shard

    shards = [rank_shard(config, tp_size, r, slices) for r in range(tp_size)]
    span = lambda a, b: f"{a:,}-{b - 1:,}" if b - a > 1 else f"{a:,}"  # noqa: E731
    hidden = f"{config.hidden_size:,} values per token"
    return [
        ("pre_attn_norm", "pre_attn_norm", NORM, ["a copy"] * tp_size),
        ("q_proj", "q_proj: query heads\n(column-parallel)", ATTENTION,
         [_heads("head", s.q_heads, span) for s in shards]),
        ("kv_proj", "k_proj, v_proj: KV heads\n(column-parallel)", ATTENTION,
         [_heads("KV head", s.kv_heads, span) for s in shards]),
        ("o_proj", "o_proj: input columns\n(row-parallel)", ATTENTION, [span(*s.o_columns) for s in shards]),
        ("all_reduce_1", "all-reduce", SUM, f"all-reduce: sum the {tp_size} partial attention outputs ({hidden})"),
        ("middle_norms", "post_attn_norm,\npre_moe_norm", NORM, ["a copy"] * tp_size),
        ("router", "router (gate)", ROUTER, [f"{config.num_local_experts} experts, top {config.num_experts_per_tok}"]
         * tp_size),
        ("experts", "every expert: w1, w3 rows,\nw2 columns", EXPERT,
         [f"{span(r * config.moe_intermediate_size // tp_size, (r + 1) * config.moe_intermediate_size // tp_size)}"
          f"\nfiles TP-{','.join(f'{f:03d}' for f in s.slice_files)}" for r, s in enumerate(shards)]),
        ("dense_mlp", "dense MLP: gate, up rows,\ndown columns", DENSE, [span(*s.mlp_rows) for s in shards]),
        ("all_reduce_2", "all-reduce", SUM, f"all-reduce: sum the {tp_size} partial (experts + dense MLP) outputs "
                                            f"({hidden})"),
        ("post_moe_norm", "post_moe_norm", NORM, ["a copy"] * tp_size),
    ]


def draw_layer_split(config, tp_size: int = 8, slices: int | None = None, bytes_per_weight: int = 2):
    """One decoder layer of `config` split over `tp_size` ranks, as `helpers.grok2.tensor_parallel` splits it: what
    each rank holds and computes, and the two all-reduces (lesson 02). Every label comes from the config and
    `rank_shard`, so a size the split refuses is refused here too."""
    from matplotlib.patches import Rectangle

    from .memory import grok2_parameter_breakdown

    slices = slices or tp_size
    rows = _layer_rows(config, tp_size, slices)
    label_w, cell_w, cell_h = 2.6, 1.25, 0.78
    figure, axis = _figure(label_w + tp_size * cell_w * 0.95, 0.55 * len(rows) + 1.6)
    axis.set_xlim(0, label_w + tp_size * cell_w)
    axis.set_ylim(-len(rows) - 0.9, 0.9)
    for r in range(tp_size):
        axis.text(label_w + (r + 0.5) * cell_w, 0.35, f"rank {r}", ha="center", fontsize=9, weight="bold",
                  gid=f"tp:rank:{r}")
    for i, (row, what, colour, labels) in enumerate(rows):
        y = -i - 0.5
        axis.text(label_w - 0.1, y, what, ha="right", va="center", fontsize=8, gid=f"tp:what:{row}")
        if isinstance(labels, str):  # a collective spans every rank
            axis.add_patch(Rectangle((label_w + 0.03, y - cell_h / 2), tp_size * cell_w - 0.06, cell_h,
                                     facecolor=colour, edgecolor="#c0392b", linewidth=1.6, gid=f"tp:{row}"))
            axis.text(label_w + tp_size * cell_w / 2, y, labels, ha="center", va="center", fontsize=8.5,
                      color="#c0392b", weight="bold", gid=f"tp:{row}:label")
            continue
        for r, label in enumerate(labels):
            axis.add_patch(Rectangle((label_w + r * cell_w + 0.03, y - cell_h / 2), cell_w - 0.06, cell_h,
                                     facecolor=colour, edgecolor="#444444", linewidth=0.8, gid=f"tp:{row}:{r}"))
            axis.text(label_w + (r + 0.5) * cell_w, y, label, ha="center", va="center", fontsize=7,
                      gid=f"tp:{row}:{r}:label")
    parts = grok2_parameter_breakdown(config)
    final_norm = config.hidden_size
    layer = (sum(parts.values()) - parts["embeddings"] - parts["lm_head"] - final_norm) / config.num_hidden_layers
    axis.set_title(f"One of {config.num_hidden_layers} decoder layers ({format_bytes(layer * bytes_per_weight)} in "
                   f"{bytes_per_weight}-byte weights) on {tp_size} ranks: matrices split {tp_size} ways, norms and "
                   f"router copied", fontsize=10)
    return figure


# ------------------------------------------------------------------------------------------------ what fits where


COMMON_MACHINES = (("RTX 4090", 1), ("T4", 1), ("H100", 1), ("H100", 2), ("H100", 3), ("H100", 4), ("A100-40GB", 8),
                   ("A100-80GB", 8), ("H100", 8), ("H200", 8))


@dataclass(frozen=True)
class Fit:
    """One model at one precision on `count` GPUs of one kind, by the planner's rule (`MemoryPlan.margin_bytes`)."""

    precision: str
    accelerator: Accelerator
    count: int
    needed_bytes: float  # weights + the KV cache of the context
    margin_bytes: float  # usable memory minus what is needed: >= 0 exactly when it fits

    @property
    def fits(self) -> bool:
        return self.margin_bytes >= 0

    @property
    def machine(self) -> str:
        return f"{self.count} x {self.accelerator.name}"

    def describe(self) -> str:
        verb = "fits, with" if self.fits else "does not fit: short by"
        return (f"{self.precision} on {self.machine}: needs {self.needed_bytes / GB:,.1f} GB, {verb} "
                f"{abs(self.margin_bytes) / GB:,.1f} GB")


def fit_grid(plan, machines=COMMON_MACHINES, precisions=("bf16", "fp8", "nf4"), context_tokens: int = 8192):
    """[precision][machine] -> Fit, for GPU kinds named by their `helpers.accelerators.ACCELERATORS` key."""
    grid = {}
    for precision in precisions:
        row = []
        for key, count in machines:
            gpu = ACCELERATORS[key]
            needed = plan.weight_bytes(precision) + plan.kv_cache_bytes(context_tokens)
            margin = plan.margin_bytes(gpu.memory_bytes, count, precision, context_tokens)
            row.append(Fit(precision, gpu, count, needed, margin))
        grid[precision] = row
    return grid


def what_fits_where(plan, machines=COMMON_MACHINES, precisions=("bf16", "fp8", "nf4"), context_tokens: int = 8192):
    """A grid: one row per precision, one column per machine; green where the weights plus one `context_tokens` KV
    cache fit with the planner's headroom, yellow where only the weights would fit in the raw memory, red otherwise.
    Each cell prints the margin in GB. FP8 cells name how the GPU runs FP8 (`Accelerator.fp8`)."""
    from matplotlib.patches import Rectangle

    grid = fit_grid(plan, machines, precisions, context_tokens)
    columns = [fit.machine for fit in next(iter(grid.values()))]
    figure, axis = _figure(1.45 * len(columns) + 2.2, 0.85 * len(precisions) + 1.9)
    axis.set_xlim(-1.6, len(columns))
    axis.set_ylim(-0.2, len(precisions) + 1.25)
    kept = 1 - GPU_USABLE_FRACTION  # the planner's rule
    axis.set_title(f"{plan.model_name}: weights + KV cache of {context_tokens:,} tokens against GPU memory "
                   f"({kept:.0%} of each GPU kept free)", fontsize=10)
    for j, label in enumerate(columns):
        axis.text(j + 0.5, len(precisions) + 0.1, label.replace(" x ", " ×\n"), ha="center", va="bottom",
                  fontsize=7.5, gid=f"column:{j}")
    for i, precision in enumerate(precisions):
        y = len(precisions) - 1 - i
        axis.text(-0.1, y + 0.5, f"{precision}\n{plan.weight_bytes(precision) / GB:,.1f} GB", ha="right",
                  va="center", fontsize=8.5, gid=f"row:{precision}")
        for j, fit in enumerate(grid[precision]):
            raw = fit.count * fit.accelerator.memory_bytes - plan.weight_bytes(precision)
            colour, state = (FITS, "fits") if fit.fits else (TIGHT, "tight") if raw >= 0 else (DOES_NOT_FIT, "no")
            axis.add_patch(Rectangle((j + 0.04, y + 0.04), 0.92, 0.92, facecolor=colour, edgecolor="white",
                                     gid=f"cell:{precision}:{j}:{state}"))
            text = f"{'+' if fit.fits else '−'}{_gb(abs(fit.margin_bytes))}"
            if precision == "fp8":
                text += f"\nFP8 {fit.accelerator.fp8}"
            axis.text(j + 0.5, y + 0.5, text, ha="center", va="center", fontsize=7.5, gid=f"margin:{precision}:{j}")
    axis.text(-1.6, -0.15, "green: fits with the headroom · yellow: only the weights fit the raw memory · red: no",
              fontsize=7.5, gid="legend")
    return figure


def _gb(n: float) -> str:
    """A margin in GB: one decimal below 10 GB, none above (helpers.units.format_bytes, fixed unit)."""
    return format_bytes(n, unit="GB", decimals=1 if n < 10 * GB else 0)


def cells(figure, prefix: str) -> list[str]:
    """The ids of the parts of `figure` whose id starts with `prefix` (what the tests and lessons count)."""
    found = [artist.get_gid() for artist in figure.findobj() if (artist.get_gid() or "").startswith(prefix)]
    return sorted(set(found))


def texts(figure) -> list[str]:
    """Every piece of text drawn in `figure`, title included."""
    from matplotlib.text import Text

    return [t.get_text() for t in figure.findobj(Text) if t.get_text()]


__all__ = ["grok2_layer", "layer_labels", "tensor_parallel_slices", "draw_layer_split", "what_fits_where",
           "fit_grid", "Fit", "COMMON_MACHINES", "cells", "texts"]

