"""Who is calling the engine, and what they may do.

On the unix socket the kernel names the caller: the peer's uid (SO_PEERCRED, read once per connection by
engine.control.peercred) becomes its user name. Over TCP the caller is the named bearer token it presents
(`expunge tokens add NAME --role ...`; only the token's SHA-256 is stored). That name is the actor of every
audit row the call causes: nothing in a request body can set it.

Roles: `viewer` reads; `operator` registers models, files requests and runs, escalates, cancels and resumes jobs;
`approver` accepts results, extends deadlines, closes requests and runs purge checks. The socket's owner (the
user the engine runs as) has every role unless `access.toml` in the config dir says otherwise:

    owner = ["viewer", "operator"]        # the owner may run jobs but not accept them
    [users]                               # other local users that can reach the socket (root)
    root = ["viewer"]
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.schema.errors import SpecError

ROLES = ("viewer", "operator", "approver")
# What each role is for, in the refusal's words.
ROLE_WORDS = {"viewer": "read", "operator": "register models, file requests and run, escalate, cancel or resume jobs",
              "approver": "accept results, extend deadlines, close requests and check their purge"}
TOKEN_PREFIX = "exp_"
ENGINE_ACTOR = "engine"  # the actor of the rows the engine writes on its own (the worker's, the scheduler's)


@dataclass(frozen=True)
class Caller:
    name: str
    roles: frozenset[str]
    via: str  # socket | token
    owner: bool = False  # the engine's own user on its socket: manages the tokens

    def view(self) -> dict:
        return {"name": self.name, "roles": sorted(self.roles), "via": self.via, "owner": self.owner}


@dataclass(frozen=True)
class Peer:
    """The other end of one connection: a local process (its credentials) or a TCP client."""

    kind: str  # unix | tcp
    uid: int | None = None
    pid: int | None = None


@dataclass
class Access:
    """The roles of the socket's local users (access.toml); tokens carry their own."""

    owner_uid: int = field(default_factory=os.getuid)
    owner_roles: frozenset[str] = frozenset(ROLES)
    users: dict[str, frozenset[str]] = field(default_factory=dict)

    def socket_caller(self, uid: int | None) -> Caller | None:
        """The caller on the unix socket, or None when the kernel did not say who it is."""
        if uid is None:
            return None
        name = user_name(uid)
        if uid == self.owner_uid:
            return Caller(name, self.owner_roles, "socket", owner=True)
        return Caller(name, self.users.get(name, frozenset()), "socket")


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def check_roles(roles, where: str) -> frozenset[str]:
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise SpecError(f"{where}: a list of roles ({', '.join(ROLES)})")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise SpecError(f"{where}: unknown role {', '.join(unknown)} (roles: {', '.join(ROLES)})")
    return frozenset(roles)


def load_access(config_dir: Path) -> Access:
    """access.toml, or every role for the owner when there is none; a malformed file is an error naming it."""
    path = config_dir / "access.toml"
    if not path.exists():
        return Access()
    try:
        content = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: {exc}") from None
    unknown = sorted(set(content) - {"owner", "users"})
    if unknown:
        raise SpecError(f"{path}: unknown setting {', '.join(unknown)} (settings: owner, users)")
    owner = check_roles(content.get("owner", list(ROLES)), f"{path}: owner")
    users = content.get("users", {})
    if not isinstance(users, dict):
        raise SpecError(f"{path}: users must be a table of NAME = [roles]")
    return Access(owner_roles=owner, users={n: check_roles(r, f"{path}: users.{n}") for n, r in users.items()})


def refusal(caller: Caller, role: str) -> str:
    """The 403's message: the role needed, what it is for, and what the caller has."""
    has = ", ".join(sorted(caller.roles)) or "no role"
    return f"this needs the {role} role (to {ROLE_WORDS[role]}); {caller.name} has {has}"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_token_name(name: str) -> str:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_.@" for c in name):
        raise SpecError(f"token name '{name[:64]}': 1 to 64 letters, digits, '-', '_', '.' or '@'")
    if name == ENGINE_ACTOR:
        raise SpecError(f"token name '{name}' is the engine's own actor name; choose another")
    return name
