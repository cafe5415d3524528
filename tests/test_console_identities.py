"""The console as an identified caller (issue 15), against a real engine on the fixed store: keys whose role
the caller lacks are shown disabled with the role, and the accept modal names who ran the job, takes the
approver's comment, and the acceptance is recorded under the socket peer's name."""

from __future__ import annotations

import os
import pwd

import pytest

from tests.console_store import prefilled_engine, settle

pytestmark = [pytest.mark.xdist_group("console-identities"), pytest.mark.anyio]
ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def anyio_backend():
    return "asyncio"


def restart_with_access(paths, access: str) -> None:
    from engine.control.daemon import start, stop

    stop(paths)
    (paths.config / "access.toml").write_text(access)
    start(paths)


def keybar_text(screen) -> str:
    from console.widgets.keybar import KeyBar

    return screen.query_one(KeyBar).render().plain


async def open_request(pilot, app, request_id: int):
    from screens.request import RequestScreen

    app.open_request(request_id)
    await settle(pilot)
    assert isinstance(app.screen, RequestScreen)
    return app.screen


async def test_keys_a_role_is_missing_for_are_disabled_naming_the_role():
    from console.app import ExpungeApp

    with prefilled_engine("ex-roles-") as (paths, ids):
        restart_with_access(paths, 'owner = ["viewer", "operator"]\n')
        app = ExpungeApp(paths=paths, start_engine=False)
        async with app.run_test(size=(160, 30)) as pilot:
            await settle(pilot)
            assert app.caller == {"name": ME, "roles": ["operator", "viewer"], "via": "socket", "owner": True}
            screen = await open_request(pilot, app, ids["request"])
            await pilot.pause(0.2)
            bar = keybar_text(screen)
            assert "Accept (needs approver)" in bar and "Close (needs approver)" in bar
            assert "Escalate (needs" not in bar
            assert screen.check_action("accept", ()) is None  # disabled: the key does nothing
            await pilot.press("a")
            await pilot.pause(0.2)
            assert app.screen is screen


async def test_the_accept_modal_names_the_executor_and_sends_the_approvers_comment():
    """The accept dialog says who ran the job, who is accepting and the policy's rule, and sends the comment as
    the caller. The fixed store's jobs have no real artifact to build a model version from (accepting builds
    one: Model versions), so the engine's refusal is what comes back, shown in the dialog, and nothing is
    accepted; test_identities accepts a real job with a comment through the API."""
    from console.app import ExpungeApp
    from console.client import EngineClient

    with prefilled_engine("ex-accept-") as (paths, ids):
        app = ExpungeApp(paths=paths, start_engine=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            screen = await open_request(pilot, app, ids["request"])
            ladder = screen.query_one("#ladder")
            ladder.move_cursor(row=ladder.get_row_index(str(ids["graddiff"])))
            await pilot.press("a")
            for _ in range(50):
                await pilot.pause(0.1)
                if app.screen is not screen:
                    break
            from screens.accept import AcceptScreen

            modal = app.screen
            assert isinstance(modal, AcceptScreen)
            who = str(modal.query_one("#accept-who").render())
            # The fixed store filed its jobs through the service directly, as "operator".
            assert "Run by operator" in who and f"accepting as {ME}" in who
            assert "any approver may accept" in str(modal.query_one("#accept-rule").render())
            modal.query_one("#accept-comment").value = "evidence reviewed"
            await pilot.press("ctrl+s")
            error = ""
            for _ in range(100):
                await pilot.pause(0.1)
                error = str(modal.query_one("#accept-error").render())
                if error:
                    break
            assert app.screen is modal and "has changed since it was written" in error, error
        with EngineClient(paths) as c:
            req = c.request(ids["request"])
        assert req["request"]["accepted_job_id"] is None and req["request"]["accepted_by"] is None
