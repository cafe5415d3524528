"""The Report modal: where to write a request's sign-off report (HTML, or Markdown for a `.md` name).

It only asks and checks the path (suffix, folder); the request screen then has the engine render the report
in a thread worker and writes it atomically (console.reportfile), so the console never waits on either."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.reportfile import default_report_name, resolve_report_path
from console.widgets.keybar import KeyBar
from screens.base import SCREENS_CSS, steady_cursors


class ReportScreen(ModalScreen[Path | None]):
    CSS_PATH = SCREENS_CSS
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", key_display="esc", id="report.cancel"),
    ]

    def __init__(self, request: dict, cwd: Path | None = None) -> None:
        super().__init__(classes="modal")
        self.request = request
        self.cwd = cwd or Path.cwd()

    def compose(self) -> ComposeResult:
        r = self.request
        with Vertical(classes="dialog", id="report-dialog"):
            yield Static(Text.assemble("Sign-off report of request ", (str(r["id"]), "bold"), " · ",
                                       Text(r.get("reference") or "no reference")), classes="question")
            yield Static(Text("The engine renders it: one self-contained HTML page (charts embedded), or "
                              "Markdown for a name ending in .md. A relative path is from the folder the "
                              "console was started in."), classes="detail")
            yield Input(f"./{default_report_name(r)}", id="report-path", compact=True)
            yield Label("", id="report-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Write (enter)", id="write", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        steady_cursors(self)
        field = self.query_one("#report-path", Input)
        field.focus()
        field.cursor_position = len(field.value)

    def check(self) -> Path | None:
        try:
            path = resolve_report_path(self.query_one("#report-path", Input).value, self.cwd)
        except ValueError as exc:
            self.query_one("#report-error", Label).update(Text(str(exc)))
            return None
        self.query_one("#report-error", Label).update("")
        return path

    @on(Input.Submitted, "#report-path")
    def submitted(self) -> None:
        self.action_write()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "write":
            self.action_write()
        else:
            self.dismiss(None)

    def action_write(self) -> None:
        path = self.check()
        if path is not None:
            self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)
