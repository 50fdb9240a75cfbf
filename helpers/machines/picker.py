"""The lesson's machine picker (ipywidgets): choose a preset or "this machine", a context length and a price per
GPU-hour, and the plan's table and picture redraw below. Readers without widgets call `helpers.machines.show_plan`.
"""

from __future__ import annotations

from .machine import PRESETS
from .planner import DEFAULT_CONTEXT
from .report import show_plan

CONTEXTS = (1024, 8192, 32768, 131072)


class MachinePicker:
    """A dropdown of machines, a context and a $/GPU-hour; `select(name)` does from code what a click does."""

    def __init__(self, machine: str = "24 GB GPU + 128 GB DDR5", context: int = DEFAULT_CONTEXT,
                 gpu_hour_price: float = 2.0):
        import ipywidgets as widgets

        self.machine = widgets.Dropdown(options=[*PRESETS, "this machine"], value=machine, description="machine",
                                        layout=widgets.Layout(width="420px"))
        self.context = widgets.Dropdown(options=list(CONTEXTS), value=context, description="context")
        self.price = widgets.BoundedFloatText(value=gpu_hour_price, min=0.0, max=1000.0, step=0.1,
                                              description="$/GPU-hour")
        self.output = widgets.Output()
        for control in (self.machine, self.context, self.price):
            control.observe(lambda _change: self.render(), names="value")
        self.box = widgets.VBox([widgets.HBox([self.machine, self.context, self.price]), self.output])
        self.plan = None
        self.render()

    def render(self):
        with self.output:
            self.output.clear_output(wait=True)
            self.plan = show_plan(self.machine.value, self.context.value, gpu_hour_price=self.price.value)
        return self.plan

    def select(self, machine: str, context: int | None = None):
        """Pick a machine (and a context) as a reader would; returns the new plan."""
        if context is not None:
            self.context.value = context
        self.machine.value = machine
        return self.plan

    def _ipython_display_(self):
        from IPython.display import display

        display(self.box)


def machine_picker(**kwargs) -> MachinePicker:
    return MachinePicker(**kwargs)


__all__ = ["MachinePicker", "machine_picker", "CONTEXTS"]
