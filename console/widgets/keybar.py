"""The footer: every active key binding of the screen, drawn as one line of text.

Textual's Footer builds one widget per key and rebuilds them all whenever the bindings change (each focus
change), which costs more CPU than the rest of a screen switch; this draws the same line directly. Keys at
the right end are cut on a narrow terminal (the help screen lists them all); a click runs a key's action."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.widget import Widget

DIM = Style(dim=True)  # a disabled key's description (a Style: rich adds Styles, not style strings)


class KeyBar(Widget, can_focus=False):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        width: 1fr;
        background: $footer-background;
        color: $footer-description-foreground;
    }
    KeyBar > .keybar--key {
        color: $footer-key-foreground;
        background: $footer-key-background;
        text-style: bold;
    }
    KeyBar > .keybar--description {
        color: $footer-description-foreground;
    }
    """
    COMPONENT_CLASSES = {"keybar--key", "keybar--description"}

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._spans: list[tuple[int, int, str]] = []  # (start, end, key) for clicks
        self._pending = False

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen) -> None:
        if not self._pending:
            self._pending = True
            self.call_after_refresh(self._redraw)

    def _redraw(self) -> None:
        self._pending = False
        self.refresh()

    def render(self) -> Text:
        key_style = self.get_component_rich_style("keybar--key")
        desc_style = self.get_component_rich_style("keybar--description")
        app = self.app
        seen: set[str] = set()
        left = Text(no_wrap=True, overflow="crop")
        spans = []
        palette = None
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            key = binding.key_display or app.get_key_display(binding)
            if binding.action == "command_palette":
                palette = (key, binding.description or "palette")
                continue
            start = left.cell_len
            left.append(f" {key} ", key_style)
            left.append(binding.description, desc_style if enabled else desc_style + DIM)
            reason = None if enabled else getattr(self.screen, "disabled_reason", lambda _a: None)(binding.action)
            if reason:  # a role the caller lacks: say which, rather than a silently dim key
                left.append(f" ({reason})", desc_style + DIM)
            spans.append((start, left.cell_len, binding.key))
        width = self.size.width or 80
        if palette is None and app.ENABLE_COMMAND_PALETTE:
            palette = (app.get_key_display(Binding(app.COMMAND_PALETTE_BINDING, "command_palette")), "palette")
        right = Text(no_wrap=True)
        if palette:
            right.append(f" {palette[0]} ", key_style)
            right.append(f"{palette[1]} ", desc_style)
        room = max(0, width - right.cell_len - 1)
        if left.cell_len > room:
            left.truncate(max(0, room - 1))
            left.append("…", desc_style)
        self._spans = [s for s in spans if s[1] <= room]
        line = Text(no_wrap=True)
        line.append_text(left)
        line.append(" " * max(1, width - left.cell_len - right.cell_len))
        line.append_text(right)
        if palette:
            self._spans.append((width - right.cell_len, width, app.COMMAND_PALETTE_BINDING))
        return line

    def _on_click(self, event: events.Click) -> None:
        for start, end, key in self._spans:
            if start <= event.x < end:
                self.app.simulate_key(key.split(",")[0])
                return
