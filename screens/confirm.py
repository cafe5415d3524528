"""Modals: a yes/no confirmation before anything destructive, and the escalation confirmation that names the
tier and method that will run, with their hyperparameters, editable."""

from __future__ import annotations

import json

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from console.client import EngineError
from console.widgets.keybar import KeyBar
from engine.schema.tuning import DEFAULT_TRIALS as DEFAULT_TUNE_TRIALS
from screens.base import SCREENS_CSS, steady_cursors


class ConfirmScreen(ModalScreen[bool]):
    CSS_PATH = SCREENS_CSS
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", key_display="n/esc", id="confirm.no"),
    ]

    def __init__(self, question: str, detail: str = "", yes: str = "Yes", no: str = "No") -> None:
        super().__init__(classes="modal")
        self.question, self.detail, self.yes, self.no = question, detail, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.question, style="bold"), classes="question")
            if self.detail:
                yield Static(Text(self.detail), classes="detail")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error", compact=True)
                yield Button(f"{self.no} (n)", id="no", variant="primary", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # the safe answer is the default

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def default_method(methods: list[dict], tier: int) -> dict | None:
    for m in methods:  # the engine marks each tier's default
        if m.get("default") and m["tier"] == tier:
            return m
    return next((m for m in sorted(methods, key=lambda m: m["name"]) if m["tier"] == tier), None)


def field_kind(schema: dict, key: str) -> tuple[str, dict]:
    prop = (schema.get("properties") or {}).get(key, {})
    kind = prop.get("type")
    if kind is None and "anyOf" in prop:
        kinds = [p.get("type") for p in prop["anyOf"] if p.get("type") != "null"]
        kind = kinds[0] if kinds else None
    if "enum" in prop:
        kind = "enum"
    return kind or "string", prop


def nullable(prop: dict) -> bool:
    return any(p.get("type") == "null" for p in prop.get("anyOf", [])) or prop.get("default", 0) is None


def value_text(value, kind: str) -> str:
    if value is None:
        return ""
    if kind in ("array", "object"):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_value(text: str, kind: str, optional: bool = False):
    text = text.strip()
    if not text and optional:
        return None
    if kind == "integer":
        return int(text)
    if kind == "number":
        return float(text)
    if kind == "boolean":
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError("true or false")
    if kind in ("array", "object"):
        return json.loads(text)
    return text


def check_range(value, prop: dict) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if "minimum" in prop and value < prop["minimum"]:
        return f"at least {prop['minimum']}"
    if "maximum" in prop and value > prop["maximum"]:
        return f"at most {prop['maximum']}"
    if "exclusiveMinimum" in prop and value <= prop["exclusiveMinimum"]:
        return f"more than {prop['exclusiveMinimum']}"
    if "exclusiveMaximum" in prop and value >= prop["exclusiveMaximum"]:
        return f"less than {prop['exclusiveMaximum']}"
    return None


class EscalateScreen(ModalScreen[dict | None]):
    """Names the tier and method that will run; hyperparameters are editable. Files the job itself, so an
    engine refusal is shown here and the operator can fix the value."""
    CSS_PATH = SCREENS_CSS

    BINDINGS = [
        Binding("ctrl+s", "run", "Run", id="escalate.run"),
        Binding("escape", "cancel", "Cancel", id="escalate.cancel"),
    ]

    def __init__(self, request: dict, methods: list[dict]) -> None:
        super().__init__(classes="modal")
        self.request = request
        self.methods = sorted(methods, key=lambda m: (m["tier"], m["name"]))
        self.next_tier = min(3, request["current_tier"] + 1)
        chosen = default_method(self.methods, self.next_tier) or (self.methods[-1] if self.methods else None)
        self.method = chosen["name"] if chosen else None
        self.edited: dict[str, str] = {}

    def _method(self, name: str | None) -> dict | None:
        return next((m for m in self.methods if m["name"] == name), None)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("", id="escalate-title", classes="question")
            yield Select([(f"tier {m['tier']} · {m['name']}", m["name"]) for m in self.methods], value=self.method,
                         allow_blank=False, id="method", compact=True)
            yield Static("", id="method-description", classes="detail")
            yield VerticalScroll(id="hyper")
            # `escalate --tune`: search the method's declared hyperparameters first, within a budget.
            with Horizontal(id="tune-row"):
                yield Checkbox("tune first", id="tune", compact=True,
                               tooltip="search the method's sensitive hyperparameters (Optuna) on a validation split, "
                                       "then run and verify the winner")
                yield Label(" trials ", classes="tune-label")
                yield Input(str(DEFAULT_TUNE_TRIALS), id="tune-trials", compact=True, classes="tune-value")
                yield Label(" or minutes ", classes="tune-label")
                yield Input("", id="tune-minutes", compact=True, classes="tune-value", placeholder="—")
            yield Label("", id="escalate-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Run (ctrl+s)", id="run", variant="warning", compact=True)
                yield Button("Cancel (esc)", id="cancel", variant="primary", compact=True)
        yield KeyBar()

    async def on_mount(self) -> None:
        await self.show_method()

    async def show_method(self) -> None:
        m = self._method(self.method)
        req = self.request
        if m is None:
            self.query_one("#escalate-title", Label).update("no method is registered")
            return
        at_top = req["current_tier"] >= 3 and m["tier"] <= req["current_tier"]
        title = Text.assemble("Run ", (f"tier {m['tier']} · {m['name']}", "bold"),
                              f" on request {req['id']}", (" (from the base model)", "dim"))
        self.query_one("#escalate-title", Label).update(title)
        note = m.get("description", "")
        if at_top:
            note += "  The request is at the top tier already: this runs another method of that tier."
        self.query_one("#method-description", Static).update(Text(note))
        box = self.query_one("#hyper", VerticalScroll)
        await box.remove_children()
        rows = []
        for key, value in m["defaults"].items():
            kind, prop = field_kind(m.get("schema", {}), key)
            hint = prop.get("description", "")
            rows.append(Horizontal(Label(Text(key), classes="hyper-key"),
                                   Input(value_text(value, kind), id=f"hp-{key}", compact=True,
                                         classes="hyper-value", tooltip=hint or None,
                                         placeholder="auto" if nullable(prop) else ""),
                                   Label(Text(hint, style="dim"), classes="hyper-hint"), classes="hyper-row"))
        await box.mount_all(rows)
        steady_cursors(self)
        self.query_one("#escalate-error", Label).update("")

    @on(Select.Changed, "#method")
    async def method_changed(self, event: Select.Changed) -> None:
        if event.value != self.method:
            self.method = event.value
            await self.show_method()

    def values(self) -> tuple[dict, list[str]]:
        m = self._method(self.method)
        hyper, errors = {}, []
        for key in m["defaults"]:
            kind, prop = field_kind(m.get("schema", {}), key)
            widget = self.query_one(f"#hp-{key}", Input)
            try:
                value = parse_value(widget.value, kind, nullable(prop))
            except (ValueError, json.JSONDecodeError):
                errors.append(f"{key}: expected {kind}")
                widget.add_class("-invalid")
                continue
            problem = check_range(value, prop)
            widget.set_class(problem is not None, "-invalid")
            if problem:
                errors.append(f"{key}: {problem}")
            hyper[key] = value
        return hyper, errors

    @on(Input.Changed)
    def validate_field(self, event: Input.Changed) -> None:
        _, errors = self.values()
        self.query_one("#escalate-error", Label).update(Text("; ".join(errors)))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run":
            self.action_run()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_run(self) -> None:
        self.run_worker(self._run, exclusive=True, group="escalate")

    def tune(self) -> tuple[dict | None, list[str]]:
        """The tuning budget when "tune first" is ticked: trials, or minutes when those are given instead."""
        if not self.query_one("#tune", Checkbox).value:
            return None, []
        trials, minutes = self.query_one("#tune-trials", Input).value.strip(), \
            self.query_one("#tune-minutes", Input).value.strip()
        try:
            if minutes:
                return {"minutes": float(minutes)}, []
            return {"trials": int(trials) if trials else DEFAULT_TUNE_TRIALS}, []
        except ValueError:
            return None, ["tune: trials must be a whole number and minutes a number"]

    async def _run(self) -> None:
        hyper, errors = self.values()
        tune, tune_errors = self.tune()
        errors += tune_errors
        if errors:
            self.query_one("#escalate-error", Label).update(Text("; ".join(errors)))
            return
        try:
            job = await self.app.client.escalate(self.request["id"], self.method, hyper, tune)
        except EngineError as exc:
            self.query_one("#escalate-error", Label).update(Text(str(exc)))
            return
        self.dismiss(job)

