"""`expunge whoami` (who the engine sees you as, with your roles) and `expunge tokens` (named bearer tokens
for the engine's TCP listener: made by the socket's owner, stored hashed, shown once, revocable)."""

from __future__ import annotations

import click

from console.cli.common import call, client, out

ROLES = ("viewer", "operator", "approver")


@click.command()
@click.option("--json", "as_json", is_flag=True)
def whoami(as_json: bool) -> None:
    """Who the engine sees you as (the socket's peer user, or your token's name) and your roles."""
    res = call(client().whoami)
    out(res, as_json, lambda r: click.echo(f"{r['name']} ({'socket' if r['via'] == 'socket' else 'token'}): "
                                           f"{', '.join(r['roles']) or 'no role'}"))


@click.group()
def tokens() -> None:
    """Named bearer tokens for the engine's TCP listener (`expunge engine start --tcp HOST:PORT`)."""


@tokens.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES),
              help="viewer reads; operator files and runs; approver accepts, extends and closes (repeatable)")
@click.option("--json", "as_json", is_flag=True)
def tokens_add(name: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Make a token for NAME; it is printed once and never again (only its SHA-256 is kept)."""
    res = call(client().add_token, name, list(roles))

    def render(r):
        click.echo(f"token for {r['name']} ({', '.join(r['roles'])}) — shown once, keep it secret:")
        click.echo(r["token"])
        click.echo("use: EXPUNGE_URL=http://HOST:PORT EXPUNGE_TOKEN=<token> expunge ...", err=True)

    out(res, as_json, render)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
def tokens_list(as_json: bool) -> None:
    """The tokens, with their roles, who made them and when, and whether they are revoked."""
    res = call(client().tokens)

    def render(rows):
        for t in rows:
            state = f"revoked {t['revoked_at'][:19]}" if t["revoked_at"] else "active"
            click.echo(f"{t['name']:<20} {','.join(t['roles']):<26} {state:<28} made by {t['created_by']} "
                       f"{t['created_at'][:19]}")
        if not rows:
            click.echo("no tokens (expunge tokens add NAME --role ROLE)")

    out(res, as_json, render)


@tokens.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def tokens_revoke(name: str, as_json: bool) -> None:
    """Revoke NAME's token: its next request is refused (401). The name stays taken, as the audit names it."""
    res = call(client().revoke_token, name)
    out(res, as_json, lambda r: click.echo(f"token {r['name']} revoked"))


COMMANDS = [whoami, tokens]
