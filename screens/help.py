"""Help: every key binding (by screen) and what each verdict means."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Static

from console.widgets.format import verdict
from console.widgets.keybar import KeyBar
from screens.base import SCREENS_CSS

VERDICTS = [
    ("pass", "Every metric the policy judges in this stage met its threshold. A job passes when every stage "
             "its request's intention requires passes."),
    ("fail", "At least one judged metric missed its threshold. Escalate to the next tier, or change the "
             "hyperparameters and run again."),
    ("skipped", "Measured, but nothing in this stage is judged for this intention (a 'suppress' request is "
                "judged on black-box attacks only)."),
    (None, "Not measured yet: the job is queued or running, or it failed before verification."),
]
STAGES = [
    ("unit", "Are the targeted outputs gone? Forget-set ROUGE-L and answer probability against 'before'; the "
             "leak rate of the request's sensitive strings."),
    ("control", "Is everything else intact? Retain-set ROUGE-L and probability relative to before, perplexity "
                "on general text, KL to the base model."),
    ("reconstruction", "Can an attacker bring it back? Paraphrase/format/sampling attacks, a relearning "
                       "fine-tune, membership inference, logit-lens presence."),
]
RULES = [
    ("after <= t", "the value after the job must be at most t"),
    ("after >= t", "at least t"),
    ("after <= t x before", "at most t times the base model's value (ratio_max)"),
    ("after >= t x before", "at least t times the base model's value (ratio_min)"),
    ("reported", "measured and shown, not judged by the policy"),
]
TIERS = [
    ("1 suppress", "a decode-time guard; nothing in the weights changes (fast, reversible)"),
    ("2 edit", "a few layers' weights, chosen by locating where the knowledge lives (RMU)"),
    ("3 gradient", "many weights: GA, GradDiff, NPO, SimNPO, IdkDPO (LoRA by default)"),
]


def screen_bindings(app) -> list[tuple[str, list[Binding]]]:
    """The key bindings of the running app (its own, then each of its screen classes'), read at run time."""
    palette = Binding(app.COMMAND_PALETTE_BINDING, "command_palette", "Command palette", id="app.palette")
    out = [("everywhere", [b for b in app.BINDINGS if isinstance(b, Binding)] + [palette])]
    for name, cls in app.screen_classes():
        out.append((name, [b for b in cls.BINDINGS if isinstance(b, Binding)]))
    return out


class HelpScreen(Screen):
    CSS_PATH = SCREENS_CSS
    KIND = "help"
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back", key_display="esc", id="help.back")]

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with VerticalScroll(id="help-body"):
            yield Static(self.verdicts(), id="help-verdicts")
            yield Static(self.keys(), id="help-keys")
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = "help"

    def verdicts(self) -> Group:
        t = Table(title="Verdicts", title_justify="left", show_header=False, expand=True, box=None, padding=(0, 1))
        t.add_column(width=8, no_wrap=True)
        t.add_column(ratio=1)
        for v, text in VERDICTS:
            t.add_row(verdict(v), text)
        s = Table(title="Stages", title_justify="left", show_header=False, expand=True, box=None, padding=(0, 1))
        s.add_column(width=15, no_wrap=True)
        s.add_column(ratio=1)
        for name, text in STAGES:
            s.add_row(Text(name, style="bold"), text)
        r = Table(title="Metric rules (thresholds come from the request's policy)", title_justify="left",
                  show_header=False, expand=True, box=None, padding=(0, 1))
        r.add_column(width=20, no_wrap=True)
        r.add_column(ratio=1)
        for rule, text in RULES:
            r.add_row(rule, text)
        tiers = Table(title="The escalation ladder", title_justify="left", show_header=False, expand=True, box=None,
                      padding=(0, 1))
        tiers.add_column(width=12, no_wrap=True)
        tiers.add_column(ratio=1)
        for tier, text in TIERS:
            tiers.add_row(Text(tier, style="bold"), text)
        return Group(t, Text(""), s, Text(""), r, Text(""), tiers, Text(""))

    def keys(self) -> Table:
        t = Table(title="Keys", title_justify="left", expand=True, box=None, padding=(0, 1))
        t.add_column("screen", width=12, no_wrap=True)
        t.add_column("key", width=10, no_wrap=True)
        t.add_column("action", ratio=1)
        t.add_column("id", ratio=1, style="dim")
        for screen, bindings in screen_bindings(self.app):
            for b in bindings:
                t.add_row(screen, b.key_display or self.app.get_key_display(b), b.tooltip or b.description, b.id or "")
                screen = ""
        return t
