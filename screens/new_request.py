"""New request: a form for the request spec, validated as typed; data files previewed (first rows, row
count); submit files it through the API. A spec file (YAML or JSON) can be loaded into the form instead.
Files and fields are checked by the engine's own schema (engine.schema), so the form and the engine agree."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Header, Input, Label, Select, Static, TextArea

from console.client import EngineError
from console.widgets.format import style
from console.widgets.keybar import KeyBar
from engine.schema.datasets import read_jsonl
from engine.schema.errors import SpecError
from engine.schema.spec import (
    DATA_KINDS,
    DEFAULT_LEGAL_BASIS,
    MAX_SENSITIVE,
    MAX_SENSITIVE_CHARS,
    parse_spec,
    read_spec_file,
)
from screens.base import EngineScreen, steady_cursors

PREVIEW_ROWS = 3


def read_rows(path: Path, kind: str) -> list[dict]:
    """A data file's rows, each checked as the engine checks it; SpecError naming the file and line."""
    try:
        return read_jsonl(path, kind)
    except OSError as exc:  # unreadable (permissions): the same kind of message as a missing file
        raise SpecError(f"{kind}: {path.name}: {exc.strerror or exc}") from None


def row_line(row: dict, width: int = 72) -> str:
    text = f"{row['question']} → {row['answer']}" if "question" in row else row.get("text", "")
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def preview_text(count: int, rows: list[dict], source: str = "", width: int = 72) -> Text:
    t = Text()
    t.append(f"{count:,} row{'s' if count != 1 else ''}", style="bold")
    if source:
        t.append(f" · {source}", style="dim")
    for row in rows[:PREVIEW_ROWS]:
        t.append("\n  " + row_line(row, width), style="dim")
    return t


class Field(Vertical):
    """A labelled form field with a line for its error or preview."""

    DEFAULT_CSS = """
    Field { height: auto; margin-bottom: 0; }
    Field > Horizontal { height: auto; }
    Field > Horizontal > .field-label { width: 14; padding-top: 0; }
    Field > Horizontal > Input, Field > Horizontal > Select { width: 1fr; }
    Field > .field-note { padding-left: 14; height: auto; display: none; }
    Field > .field-note.-shown { display: block; }
    Field > .field-note.-error { color: $error; }
    """

    def __init__(self, label: str, widget, note_id: str, required: bool = False) -> None:
        super().__init__()
        self.label, self.widget, self.note_id, self.required = label, widget, note_id, required

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label + (" *" if self.required else ""), classes="field-label")
            yield self.widget
        yield Static("", id=self.note_id, classes="field-note")


class NewRequestScreen(EngineScreen):
    KIND = "new_request"
    ROLE_OF_ACTION = {"submit": "operator"}
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", key_display="esc", id="new_request.back"),
        Binding("ctrl+s", "submit", "Submit", id="new_request.submit"),
        Binding("ctrl+o", "load_spec", "Load spec file", id="new_request.load_spec"),
    ]

    def __init__(self, spec_path: str | None = None) -> None:
        super().__init__()
        self.spec_path = spec_path
        self.inline: dict[str, list[dict]] = {}  # rows that came inline in a loaded spec
        self.counts: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self.models: list[dict] = []
        self.submitting = False

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with VerticalScroll(id="form"):
            with Horizontal(id="spec-row"):
                yield Input(placeholder="spec file (YAML or JSON) to load instead of typing", id="spec-file",
                            compact=True)
                yield Button("Load (ctrl+o)", id="load-spec", compact=True)
            yield Field("title", Input(placeholder="Erasure request 4711 — Alma Rivera", id="title", compact=True,
                                       max_length=300), "title-note", required=True)
            yield Field("reference", Input(placeholder="ticket, e.g. DSR-2026-4711", id="reference",
                                           compact=True, max_length=200), "reference-note")
            yield Field("received", Input(placeholder="YYYY-MM-DD when the data subject asked (default: today)",
                                          id="received", compact=True, max_length=10), "received-note")
            yield Field("legal basis", Input(placeholder=DEFAULT_LEGAL_BASIS, id="legal-basis", compact=True,
                                             max_length=200), "legal-basis-note")
            yield Field("due", Input(placeholder="YYYY-MM-DD (default and latest: 30 days after receipt)", id="due",
                                     compact=True, max_length=10), "due-note")
            yield Field("intention", Select([("remove — gone from the weights", "remove"),
                                             ("suppress — the model must not say it", "suppress")],
                                            value="remove", allow_blank=False, id="intention", compact=True),
                        "intention-note")
            yield Field("model", Select([], prompt="registered model", id="model", compact=True), "model-note",
                        required=True)
            yield Field("forget", Input(placeholder="forget.jsonl: {question, answer} or {text} rows", id="forget",
                                        compact=True), "forget-note", required=True)
            yield Field("retain", Input(placeholder="optional: default is the model's registered retain sample",
                                        id="retain", compact=True), "retain-note")
            yield Field("holdout", Input(placeholder="optional: same-kind facts the model never saw", id="holdout",
                                         compact=True), "holdout-note")
            yield Field("probes", Input(placeholder="optional: extra attack prompts", id="probes", compact=True),
                        "probes-note")
            yield Field("neighbours", Input(placeholder="optional: same-kind facts to keep (default: built)",
                                            id="neighbours", compact=True), "neighbours-note")
            yield Field("sensitive", TextArea(id="sensitive", soft_wrap=True, show_line_numbers=False,
                                              placeholder="one string per line: names, numbers, addresses"),
                        "sensitive-note")
            yield Field("policy", Select([], prompt="policy", id="policy", compact=True), "policy-note")
            yield Field("verification", Select([("full — every attack at its full budget", "full"),
                                                ("quick — every metric, a smaller attack budget", "quick")],
                                               value="full", allow_blank=False, id="verification", compact=True),
                        "verification-note")
            yield Field("prompts", Select([("the model's setting", "model"),
                                           ("through its chat template, if it has one", "auto"),
                                           ("plain Question:/Answer: text", "none")],
                                          value="model", allow_blank=False, id="chat-template", compact=True),
                        "chat-template-note")
            yield Field("first method", Select([], prompt="engine's choice (cheapest tier that fits)",
                                               id="method", compact=True), "method-note")
            yield Field("ladder", Select([("run the first job only; escalate by hand", False),
                                          ("climb tier by tier until the verdicts pass", True)], value=False,
                                         allow_blank=False, id="auto-escalate", compact=True), "ladder-note")
            yield Static("", id="form-error")
            yield Button("Submit (ctrl+s)", id="submit", variant="primary", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = "new request"
        steady_cursors(self)
        self.query_one("#title", Input).focus()
        if self.spec_path:
            self.query_one("#spec-file", Input).value = self.spec_path

    async def load(self) -> None:
        client = self.app.client
        models = await client.models()
        policies = await self.app.cached("policies")
        methods = await self.app.cached("methods")
        self.models = models
        model = self.query_one("#model", Select)
        current = model.value
        model.set_options([(f"{m['name']} ({m['params']:,} params)", m["name"]) for m in models])
        if current is not Select.NULL and any(m["name"] == current for m in models):
            model.value = current
        elif len(models) == 1:
            model.value = models[0]["name"]
        if not models:
            self.note("model", "no model is registered: `expunge models add NAME DIR` (or `expunge demo`)", True)
        policy = self.query_one("#policy", Select)
        current = policy.value
        policy.set_options([(_cut(f"{p['name']} — {p.get('description', '')}", 56), p["name"]) for p in policies])
        policy.value = current if current is not Select.NULL else (
            "default" if any(p["name"] == "default" for p in policies) else Select.NULL)
        self.query_one("#method", Select).set_options(
            [(f"tier {m['tier']} · {m['name']}", m["name"]) for m in sorted(methods, key=lambda m: (m["tier"],
                                                                                                    m["name"]))])
        if self.spec_path and not self.inline and not self.query_one("#title", Input).value:
            self.action_load_spec()

    # ------------------------------------------------------------ validation as typed

    def note(self, field: str, text: str | Text, error: bool = False) -> None:
        widget = self.query_one(f"#{field}-note", Static)
        widget.update(text if isinstance(text, Text) else Text(text))
        widget.set_class(error, "-error")
        widget.set_class(bool(text.plain if isinstance(text, Text) else text), "-shown")
        if error:
            self.errors[field] = text.plain if isinstance(text, Text) else text
        else:
            self.errors.pop(field, None)

    @on(Input.Changed, "#title")
    def title_changed(self, event: Input.Changed) -> None:
        if not event.value.strip():
            self.note("title", "a title is required", True)
        else:
            self.note("title", "")

    @on(Input.Changed, ", ".join(f"#{kind}" for kind in DATA_KINDS))
    def data_changed(self, event: Input.Changed) -> None:
        kind = event.input.id
        self.inline.pop(kind, None)
        self.counts.pop(kind, None)
        if not event.value.strip():
            self.note(kind, "a forget set is required" if kind == "forget" else "", kind == "forget")
            return
        self.preview(kind, event.value.strip())

    @work(thread=True, exclusive=False, group="preview")
    def preview(self, kind: str, value: str) -> None:
        try:
            rows = read_rows(self.resolve(value), kind)
        except SpecError as exc:  # shown on the field's own line: without the field's name in front
            self.app.call_from_thread(self._preview_done, kind, value, None, str(exc).removeprefix(f"{kind}: "))
            return
        self.app.call_from_thread(self._preview_done, kind, value, rows, None)

    def _preview_done(self, kind: str, value: str, rows: list[dict] | None, error: str | None) -> None:
        if self.query_one(f"#{kind}", Input).value.strip() != value:
            return  # typed on since
        if error:
            self.note(kind, error, True)
            return
        self.counts[kind] = len(rows)
        self.note(kind, preview_text(len(rows), rows, width=self.preview_width))

    @on(TextArea.Changed, "#sensitive")
    def sensitive_changed(self, event: TextArea.Changed) -> None:
        values = self.sensitive()
        long = [v for v in values if len(v) > MAX_SENSITIVE_CHARS]
        if long:
            self.note("sensitive", f"each sensitive string must be at most {MAX_SENSITIVE_CHARS} characters", True)
        elif len(values) > MAX_SENSITIVE:
            self.note("sensitive", f"at most {MAX_SENSITIVE} sensitive strings", True)
        else:
            self.note("sensitive", f"{len(values)} string{'s' if len(values) != 1 else ''}: leaks of any of them "
                                   "are counted (case-, space- and punctuation-insensitive)" if values else "")

    @on(Select.Changed, "#model")
    def model_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL:
            self.note("model", "")

    @property
    def preview_width(self) -> int:
        return max(20, self.app.size.width - 22)

    def sensitive(self) -> list[str]:
        return [line.strip() for line in self.query_one("#sensitive", TextArea).text.splitlines() if line.strip()]

    def resolve(self, value: str) -> Path:
        return Path(value).expanduser().resolve()

    # ------------------------------------------------------------ spec file

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "load-spec":
            self.action_load_spec()
        elif event.button.id == "submit":
            self.action_submit()

    @on(Input.Submitted, "#spec-file")
    def spec_submitted(self) -> None:
        self.action_load_spec()

    def action_load_spec(self) -> None:
        value = self.query_one("#spec-file", Input).value.strip()
        if not value:
            self.query_one("#spec-file", Input).focus()
            self.notify("type the spec file's path, then ctrl+o")
            return
        path = self.resolve(value)
        try:
            raw = read_spec_file(path).model_dump()  # checked as `expunge submit` checks it
        except (OSError, SpecError) as exc:
            message = str(exc) if path.name in str(exc) else f"{path.name}: {exc}"
            self.query_one("#form-error", Static).update(Text(message, style=style("bold red")))
            return
        self.fill(raw, path.parent)
        self.query_one("#form-error", Static).update(Text(f"loaded {path}", style=style("green")))

    def fill(self, raw: dict, folder: Path) -> None:
        """Fill the form from a validated spec (RequestSpec's fields); data file paths are relative to `folder`."""
        self.query_one("#title", Input).value = raw["title"]
        self.query_one("#reference", Input).value = raw["reference"]
        self.query_one("#intention", Select).value = raw["intention"]
        model = raw["model"]
        if any(m["name"] == model for m in self.models):
            self.query_one("#model", Select).value = model
        else:
            self.note("model", f"the spec names model '{model}', which is not registered", True)
        for kind in DATA_KINDS:
            value = raw.get(kind)
            widget = self.query_one(f"#{kind}", Input)
            if isinstance(value, str):
                widget.value = str((folder / value).expanduser())
            elif isinstance(value, list):
                with widget.prevent(Input.Changed):
                    widget.value = ""
                self.inline[kind] = value
                self.counts[kind] = len(value)
                self.note(kind, preview_text(len(value), value, "inline in the spec", self.preview_width))
            else:
                widget.value = ""
        self.query_one("#sensitive", TextArea).text = "\n".join(raw["sensitive"])
        self.query_one("#received", Input).value = raw.get("received") or ""
        basis = raw.get("legal_basis") or ""
        self.query_one("#legal-basis", Input).value = "" if basis == DEFAULT_LEGAL_BASIS else basis
        self.query_one("#due", Input).value = raw.get("due") or ""
        self.query_one("#verification", Select).value = raw["verification"]
        self.query_one("#chat-template", Select).value = raw["chat_template"] or "model"
        try:
            self.query_one("#policy", Select).value = raw["policy"]
        except Exception:  # an unknown policy: the engine names it on submit
            self.note("policy", f"unknown policy '{raw['policy']}'", True)

    # ------------------------------------------------------------ submit

    def action_submit(self) -> None:
        if not self.submitting:
            self.submitting = True
            self.run_worker(self._submit, exclusive=True, group="submit")

    def build(self) -> tuple[dict | None, list[str]]:
        problems = [f"{k}: {v}" for k, v in self.errors.items()]
        title = self.query_one("#title", Input).value.strip()
        if not title and "title" not in self.errors:
            problems.append("title: a title is required")
        model = self.query_one("#model", Select).value
        if model is Select.NULL and "model" not in self.errors:
            problems.append("model: choose a registered model")
        forget_value = self.query_one("#forget", Input).value.strip()
        if not forget_value and "forget" not in self.inline and "forget" not in self.errors:
            problems.append("forget: a forget set is required")
        if problems:
            return None, problems
        spec: dict = {"title": title, "reference": self.query_one("#reference", Input).value.strip(),
                      "intention": self.query_one("#intention", Select).value, "model": model,
                      "sensitive": self.sensitive()}
        policy = self.query_one("#policy", Select).value
        if policy is not Select.NULL:
            spec["policy"] = policy
        spec["verification"] = self.query_one("#verification", Select).value
        # The legal clock: left out when blank (the engine's defaults: received now, due 30 days later).
        for key, widget in (("received", "#received"), ("legal_basis", "#legal-basis"), ("due", "#due")):
            value = self.query_one(widget, Input).value.strip()
            if value:
                spec[key] = value
        chat = self.query_one("#chat-template", Select).value
        if chat != "model":  # else the model's registered setting applies
            spec["chat_template"] = chat
        for kind in DATA_KINDS:
            if kind in self.inline:
                spec[kind] = self.inline[kind]
                continue
            value = self.query_one(f"#{kind}", Input).value.strip()
            if value:
                try:
                    spec[kind] = read_rows(self.resolve(value), kind)  # inline: the engine reads no operator file
                except SpecError as exc:
                    problems.append(str(exc))
        if not problems:
            try:
                parse_spec(spec)
            except SpecError as exc:
                problems.append(str(exc))
        return (spec if not problems else None), problems

    async def _submit(self) -> None:
        error = self.query_one("#form-error", Static)
        try:
            spec, problems = self.build()
            if problems:
                error.update(Text("Fix first: " + "; ".join(problems), style=style("bold red")))
                return
            method = self.query_one("#method", Select).value
            auto_escalate = bool(self.query_one("#auto-escalate", Select).value)
            error.update(Text("filing…", style="dim"))
            try:
                res = await self.app.client.submit(spec, None if method is Select.NULL else method,
                                                   auto_escalate=auto_escalate)
            except EngineError as exc:
                error.update(Text(f"The engine refused: {exc}", style=style("bold red")))
                return
        finally:
            self.submitting = False
        req, job = res["request"], res.get("job")
        self.notify(f"request {req['id']} filed" + (f"; job {job['id']} queued (tier {job['tier']} {job['method']})"
                                                     if job else ""), title="filed")
        for w in req.get("warnings") or []:
            self.notify(w, title="warning", severity="warning", markup=False)
        self.app.pop_screen()
        self.app.open_request(req["id"])


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
