"""A component class's style as Rich should draw it.

Textual's `get_component_rich_style` hands a translucent colour to Rich without its alpha, so
`color: $foreground-muted` (the foreground at a fraction of its strength) came out at full
strength: the muted labels and dimmed rows of the tables and panes were not muted at all. Here
such a colour is mixed over the widget's background first, as Textual does for a widget's own
text.
"""

from __future__ import annotations

from rich.style import Style
from textual.widget import Widget


def component_style(widget: Widget, component: str) -> Style:
    """The partial style of `component` (only what its rules set), translucency resolved."""
    style = widget.get_component_rich_style(component, partial=True)
    styles = widget.get_component_styles(component)
    if styles.has_rule("color") and styles.color.a < 1:
        background = widget.background_colors[1]
        style += Style(color=(background + styles.color).rich_color)
    return style
