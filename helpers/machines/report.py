"""What a reader sees of a route plan: the table as Markdown, the picture (where the bytes live, what bounds the
speed), and `show_plan`, the one call that displays both in a notebook.

    show_plan("24 GB GPU + 128 GB DDR5", gpu_hour_price=0.5)
    figure = plot_plan(plan_routes("8 x H100 80 GB"))
"""

from __future__ import annotations

from ..tables import markdown_table
from ..units import GB
from .planner import RoutePlan, plan_routes
from .route import Route, store_kind

COLORS = {"gpu": "#4C72B0", "unified": "#8172B2", "ram": "#DD8452", "disk": "#C44E52", "pcie": "#937860",
          "nvlink": "#55A868", "network": "#DA8BC3"}


TABLE_COLUMNS = ["route", "weights", "fits", "decode bound (tok/s)", "s/token (bound)", "limited by",
                 "prefill bound (tok/s)", "disk", "$/hour", "$/M tokens (at the bound)", "why"]


def plan_markdown(plan: RoutePlan, gpu_hour_price: float | None = None, machine_hour_price: float | None = None,
                  all_routes: bool = False) -> str:
    header = f"**{plan.machine.name}**: " + "; ".join(plan.machine.describe()[:3])
    table = markdown_table(plan.table(gpu_hour_price, machine_hour_price, all_routes), TABLE_COLUMNS)
    return f"{header}\n\n{table}\n\n{plan.verdict()}"


def _bytes_panel(axis, route: Route) -> None:
    """One bar per place the route keeps bytes, split by what lives there, against what may be filled there."""
    stores = route.stores()
    for row, (where, items, capacity) in enumerate(stores):
        left, color = 0.0, COLORS[store_kind(where)]
        total = sum(p.bytes for p in items)
        for item in items:
            axis.barh(row, item.bytes / GB, left=left, color=color, edgecolor="white", alpha=0.85)
            if item.bytes > 0.07 * max(total, capacity or 0.0):
                axis.text(left + item.bytes / 2 / GB, row, item.what[:28], ha="center", va="center", fontsize=7,
                          color="white")
            left += item.bytes / GB
        if capacity:
            axis.plot([capacity / GB] * 2, [row - 0.4, row + 0.4], color="black", linewidth=2)
    axis.set_yticks(range(len(stores)), [w if len(w) < 40 else w[:37] + "..." for w, _, _ in stores], fontsize=8)
    axis.set_xlabel("GB (black line: what may be filled)")
    axis.set_title(f"Where the bytes live: {route.title} [{route.weights.name}]", fontsize=9)


def _speed_panel(axis, plan: RoutePlan) -> None:
    """The decode bound of every route that fits, coloured by the memory that limits it (log scale)."""
    fitting = plan.fitting[::-1]
    for row, route in enumerate(fitting):
        limit = route.limited_by
        axis.barh(row, route.decode_tok_s, color=COLORS[limit.kind])
        speed = route.decode_tok_s
        label = f"{speed:,.0f} tok/s" if speed >= 10 else f"{speed:.2g} tok/s" if speed >= 1 else f"{1 / speed:,.2g} s/token"
        axis.text(speed, row, f" {label} ({limit.kind})", va="center", fontsize=7)
    axis.set_yticks(range(len(fitting)), [f"{r.title[:34]} [{r.weights.name}]" for r in fitting], fontsize=8)
    axis.set_xscale("log")
    axis.set_xlabel("decode bound, tokens/s at batch 1 (log scale; colour: what limits it)")
    axis.set_title(f"What bounds the speed on {plan.machine.name}", fontsize=9)


def plot_plan(plan: RoutePlan, route: Route | None = None):
    """A figure: where the bytes of `route` (default: `plan.best`, the highest bound in the table) live, and every
    fitting route's decode
    bound with the memory that sets it. Without a fitting route, a figure that says so."""
    import matplotlib.pyplot as plt  # also registers the notebook's inline display of figures

    route = route or plan.best
    if route is None:
        figure, axis = plt.subplots(figsize=(8, 1.5))
        plt.close(figure)
        axis.axis("off")
        axis.text(0.5, 0.5, f"No route fits on {plan.machine.name}", ha="center", va="center")
        return figure
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 0.6 * max(4, len(plan.fitting)) + 1.5))
    plt.close(figure)  # shown by the notebook where it is the cell's value, not twice
    _bytes_panel(left, route)
    _speed_panel(right, plan)
    figure.tight_layout()
    return figure


def show_plan(machine, context: int = 8192, gpu_hour_price: float | None = None,
              machine_hour_price: float | None = None, picture: bool = True) -> RoutePlan:
    """Display the plan of `machine` (a preset name, "this machine", or a Machine): the table, the verdict and the
    picture. Returns the plan."""
    from IPython.display import Markdown, display

    plan = plan_routes(machine, context)
    display(Markdown(plan_markdown(plan, gpu_hour_price, machine_hour_price)))
    if picture:
        display(plot_plan(plan))
    return plan


__all__ = ["markdown_table", "plan_markdown", "plot_plan", "show_plan", "TABLE_COLUMNS", "COLORS"]
