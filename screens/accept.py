"""Accept modal: names the job, who ran it (and when), who is accepting, the policy's acceptance rule, and asks
for the approver's comment. Files the acceptance itself, so the engine's refusal (a missing role, or four-eyes:
the executor may not accept their own job) is shown here, in the dialog."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.client import EngineError
from console.widgets.format import when
from console.widgets.keybar import KeyBar
from screens.base import SCREENS_CSS, steady_cursors


class AcceptScreen(ModalScreen[dict | None]):
    CSS_PATH = SCREENS_CSS
    BINDINGS = [
        Binding("ctrl+s", "accept", "Accept", id="accept.accept"),
        Binding("escape", "cancel", "Cancel", id="accept.cancel"),
    ]

    def __init__(self, request: dict, job: dict, approval: str, me: str | None) -> None:
        super().__init__(classes="modal")
        self.request, self.job, self.approval, self.me = request, job, approval, me

    def compose(self) -> ComposeResult:
        job, req = self.job, self.request
        executor = job.get("requested_by") or req.get("requested_by") or "unknown"
        with Vertical(classes="dialog"):
            yield Static(Text.assemble("Accept ", (f"job {job['id']}", "bold"),
                                       f" (tier {job['tier']} · {job['method']}, verdict {job.get('verdict') or '—'})"
                                       f" as request {req['id']}'s result?"), classes="question")
            yield Static(Text(f"Run by {executor} (queued {when(job.get('created_at'))}, finished "
                              f"{when(job.get('finished_at'))}); accepting as {self.me or 'you'}."),
                         id="accept-who", classes="detail")
            rule = (f"Policy {req['policy']} requires a second person: {executor} cannot accept this job."
                    if self.approval == "second_person" else f"Policy {req['policy']}: any approver may accept.")
            yield Static(Text(rule), id="accept-rule", classes="detail")
            yield Input(placeholder="comment (kept in the audit chain and the report)", id="accept-comment",
                        max_length=2000, compact=True)
            yield Label("", id="accept-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Accept (ctrl+s)", id="accept", variant="warning", compact=True)
                yield Button("Cancel (esc)", id="cancel", variant="primary", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        steady_cursors(self)
        self.query_one("#accept-comment", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "accept":
            self.action_accept()
        else:
            self.dismiss(None)

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.action_accept()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_accept(self) -> None:
        self.run_worker(self._accept, exclusive=True, group="accept")

    async def _accept(self) -> None:
        comment = self.query_one("#accept-comment", Input).value.strip() or None
        try:
            res = await self.app.client.accept(self.request["id"], self.job["id"], comment)
        except EngineError as exc:
            self.query_one("#accept-error", Label).update(Text(str(exc)))
            return
        self.dismiss(res)
