"""The help screen (? or F1): keys of every screen and the filter language."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# The language itself is daemoneye.filters; these are examples of it for the help screen.
FILTER_HELP: tuple[tuple[str, str], ...] = (
    ("ssh", "free text: name, command line, exe or user"),
    ("user:root  name:ssh  exe:/tmp", "that field contains the text (also cmd: cwd: state:)"),
    ("pid:123  ppid:1  uid:0", "exact numbers"),
    ("cpu:>5 rss:>100M threads:>10", "comparisons (also cpu>5); rss takes K, M, G"),
    ("alerted", "has an open or acknowledged alert"),
    ("not:name:kworker", "not: negates any term (also -name:kworker)"),
)
HelpSections = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


def help_text(sections: HelpSections, current: str) -> Text:
    text = Text(end="")
    for title, keys in sections:
        marker = "▸ " if title.lower() == current else "  "
        text.append(f"{marker}{title}\n", "bold")
        for key, meaning in keys:
            text.append(f"    {key:<14}", "bold")
            text.append(f"{meaning}\n")
    text.append("\n  The filter line (processes, /)\n", "bold")
    for example, meaning in FILTER_HELP:
        text.append(f"    {example:<30}", "bold")
        text.append(f"{meaning}\n")
    text.append("    All terms must match; a term that is wrong is named beside the line.\n")
    return text


class HelpScreen(ModalScreen[None]):
    """Keys per screen and the filter syntax; any of Esc, q, ?, F1 closes it."""

    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "close", "Close"),
    ]

    def __init__(self, sections: HelpSections, current_mode: str) -> None:
        super().__init__()
        self.sections = sections
        self.current_mode = current_mode

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog") as dialog:
            dialog.border_title = "DaemonEye — help"
            dialog.border_subtitle = "Esc closes"
            yield Static(help_text(self.sections, self.current_mode))

    def action_close(self) -> None:
        self.dismiss(None)
