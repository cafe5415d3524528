"""The base of the data screens: each loads from the engine's API when it becomes current (or when the engine
reconnects), and applies EngineUpdates in place while it is shown."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.screen import ModalScreen, Screen

from console.messages import ConnectionChanged, EngineUpdate

if TYPE_CHECKING:
    from console.client import EngineError


def steady_cursors(screen: Screen) -> None:
    """No blinking cursors: a blink redraws twice a second, which costs CPU and SSH bandwidth."""
    for widget in screen.query("Input, TextArea"):
        widget.cursor_blink = False


# Every screen's rules but the dashboard's (those are in console/app.tcss, parsed before the first paint); absolute,
# so a subclass elsewhere (tests, bench) finds it too.
SCREENS_CSS = str(Path(__file__).with_name("screens.tcss"))

APP_ROLES = {"new_request": "operator"}  # the app's own keys that need a role (console.app.check_action)


def missing_role(app, action: str, needs: dict[str, str]) -> str | None:
    """The role `action` needs that the engine's caller (app.caller, from /whoami) lacks; None when it may
    (or before the console knows who it is: the engine still refuses, naming the role)."""
    role = needs.get(action)
    caller = getattr(app, "caller", None)
    if role is None or caller is None or role in caller.get("roles", ()):
        return None
    return role


class EngineScreen(Screen):
    """A screen over engine data: `load()` fetches and renders; `apply(update)` handles live changes."""

    CSS_PATH = SCREENS_CSS
    loaded = False  # set after the first successful load (tests wait on it)
    ROLE_OF_ACTION: dict[str, str] = {}  # action -> the role it needs: without it the key is shown disabled

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A key whose role the caller lacks is shown disabled (None), with that role (KeyBar)."""
        return None if missing_role(self.app, action, self.ROLE_OF_ACTION) else True

    def disabled_reason(self, action: str) -> str | None:
        role = missing_role(self.app, action, {**APP_ROLES, **self.ROLE_OF_ACTION})
        return f"needs {role}" if role else None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._dirty = True
        self.load_count = 0

    @property
    def shown(self) -> bool:
        """On top, or visible around a modal. (Textual's `is_current` is also true for the screen under any
        top screen, and a screen under an opaque one must not repaint: its dirty regions are repainted
        through the top screen, which over SSH means redrawing the whole terminal for nothing.)"""
        try:
            top = self.app.screen
        except Exception:  # no screen stack (shutting down)
            return False
        return top is self or (isinstance(top, ModalScreen) and self in self.app._background_screens)

    def on_screen_resume(self) -> None:
        if self._dirty:
            self.call_after_refresh(self.reload)  # paint the frame first, then fetch

    def reload(self) -> None:
        if not self.shown:  # covered since this was scheduled: load when shown again
            self._dirty = True
            return
        self._dirty = False
        self.run_worker(self._load, group="load", exclusive=True, exit_on_error=False)

    async def _load(self) -> None:
        from console.client import EngineError  # imported after the first paint (httpx is not light)

        try:
            await self.load()
        except EngineError as exc:
            self.load_failed(exc)
            return
        except Exception as exc:  # a bug: say so rather than leave the screen empty
            self.log.error(f"loading {self!r} failed: {exc!r}")
            self.notify(f"{type(exc).__name__}: {exc}", title="internal error while loading", severity="error",
                        markup=False)
            raise
        self.loaded = True
        self.load_count += 1

    async def load(self) -> None:  # pragma: no cover - every screen overrides it
        raise NotImplementedError

    def load_failed(self, exc: EngineError) -> None:
        if exc.status is None:  # the engine is not reachable: the app reconnects, then this screen reloads
            self._dirty = True
            return
        self.notify(str(exc), title="could not load", severity="error", markup=False)

    def on_engine_update(self, update: EngineUpdate) -> None:
        if update.reconnected:
            if self.shown:
                self.reload()
            else:
                self._dirty = True
            return
        if self.shown:
            self.apply(update)
        elif self.wants(update):
            self._dirty = True

    def note_hidden_update(self, update: EngineUpdate) -> None:
        """Called (not posted) while this screen is covered: only remember to reload when shown again."""
        if update.reconnected or self.wants(update):
            self._dirty = True

    def wants(self, update: EngineUpdate) -> bool:
        """Whether this update concerns this screen (while hidden: reload when shown again)."""
        return True

    def apply(self, update: EngineUpdate) -> None:
        if self.wants(update):
            self.reload()

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        pass
