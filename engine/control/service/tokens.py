"""Named bearer tokens for the TCP listener: made (shown once), listed, revoked; each audited."""

from __future__ import annotations

from sqlmodel import Session, select

from engine.control.identity import check_roles, check_token_name, new_token, token_sha256
from engine.control.service import clock
from engine.schema.errors import NotFound, SpecError
from store import audit
from store.models import ApiToken


def add_token(s: Session, name: str, roles: list[str], actor: str) -> tuple[ApiToken, str]:
    """A new token for `name`; returns the row and the token itself, which is never stored or shown again."""
    check_token_name(name)
    if not roles:
        raise SpecError("roles: give at least one role (viewer, operator, approver)")
    check_roles(roles, "roles")
    if s.exec(select(ApiToken).where(ApiToken.name == name)).first() is not None:
        raise SpecError(f"token name '{name}' is taken (revoked names stay taken: the audit names them)")
    token = new_token()
    row = ApiToken(name=name, roles=sorted(set(roles)), sha256=token_sha256(token), created_by=actor)
    s.add(row)
    s.flush()
    audit.append(s, "token.add", f"token:{name}", {"roles": row.roles}, actor=actor)
    s.commit()
    return row, token


def list_tokens(s: Session) -> list[ApiToken]:
    return list(s.exec(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(s: Session, name: str, actor: str) -> ApiToken:
    row = s.exec(select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        raise NotFound(f"no token named '{name}'")
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        s.add(row)
        audit.append(s, "token.revoke", f"token:{name}", {}, actor=actor)
        s.commit()
    return row


def token_view(row: ApiToken) -> dict:
    return {"name": row.name, "roles": row.roles, "created_at": row.created_at.isoformat(),
            "created_by": row.created_by, "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}
