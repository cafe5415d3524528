"""The request spec (YAML or JSON), validated completely before anything is queued."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.schema.datasets import MAX_ROWS, as_qa, check_row, lone_surrogate, read_jsonl
from engine.schema.errors import SpecError

DEFAULT_LEGAL_BASIS = "GDPR Art. 17 (right to erasure)"
MAX_SENSITIVE = 1000  # strings per request
MAX_SENSITIVE_CHARS = 500


class RequestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300)
    reference: str = Field(default="", max_length=200)
    intention: Literal["suppress", "remove"] = "remove"
    model: str = Field(min_length=1, max_length=500)
    forget: str | list[dict]
    retain: str | list[dict] | None = None
    holdout: str | list[dict] | None = None
    probes: str | list[dict] | None = None
    # Same-shaped facts about other entities that must stay as they are (issue 13): given, they replace the
    # neighbours the engine would build from the base's own answers; split into trained and judged like retain.
    neighbours: str | list[dict] | None = None
    sensitive: list[str] = Field(default_factory=list, max_length=MAX_SENSITIVE)
    policy: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Ask through the model's chat template ('auto': when its tokenizer has one) or in the plain
    # "Question: … Answer:" format ('none'); unset: the model's registered setting.
    chat_template: Literal["auto", "none"] | None = None
    # 'quick': every metric on a smaller budget (fewer sampled attacks, a shorter relearning attack);
    # recorded with the request, in each job's result and its artifact manifest.
    verification: Literal["full", "quick"] = "full"
    # The legal clock (issue 15): when the data subject's request arrived (default: when it is filed), the
    # provision it rests on, and when the answer is due (default and latest: 30 days after receipt; later
    # only through an audited extension, `expunge extend`). Dates are YYYY-MM-DD (UTC).
    received: str | None = None
    legal_basis: str = Field(default=DEFAULT_LEGAL_BASIS, max_length=200)
    due: str | None = None

    @field_validator("received", "due")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise ValueError(f"'{value[:40]}' is not a date (YYYY-MM-DD)") from None
    # The model version its jobs start from (issue 14); unset: the model's current version when it is filed.
    version: int | None = Field(default=None, ge=0, le=1_000_000)

    @field_validator("sensitive")
    @classmethod
    def _sensitive_strings(cls, values: list[str]) -> list[str]:
        cleaned = [v.strip() for v in values]
        if any(not v or len(v) > MAX_SENSITIVE_CHARS for v in cleaned):
            raise ValueError(f"each sensitive string must be 1 to {MAX_SENSITIVE_CHARS} characters")
        return cleaned


DATA_KINDS = ("forget", "retain", "holdout", "probes", "neighbours")


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_spec(raw: dict) -> RequestSpec:
    if not isinstance(raw, dict):
        raise SpecError("the spec must be a mapping of fields (title, model, forget, ...)")
    bad = lone_surrogate(raw)
    if bad is not None:
        raise SpecError(f"{bad}: not valid Unicode (a lone surrogate code point)")
    try:
        return RequestSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from None


def read_spec_file(path: Path) -> RequestSpec:
    """Read and validate a YAML/JSON spec; its data files are left as paths (relative to its folder)."""
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path.name}: not valid UTF-8 (byte {exc.start})") from None
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise different types; both are the operator's input error
        raise SpecError(f"{path.name}: cannot parse: {exc}") from None
    return parse_spec(raw)


def load_spec_file(path: Path) -> dict:
    """Read a YAML/JSON spec and inline its data files, so the engine receives one self-contained body."""
    body = read_spec_file(path).model_dump()
    for kind in DATA_KINDS:
        value = body.get(kind)
        if isinstance(value, str):
            body[kind] = read_jsonl((path.parent / value).expanduser(), kind)
    return body


def resolve_rows(spec: RequestSpec, allow_paths: bool = True) -> dict[str, list[dict] | None]:
    """The inline rows of each data kind, each row checked; file paths are read relative to the cwd.

    The engine takes rows inline only (allow_paths=False): a client reads its own files, so the
    engine never opens a path on a client's say-so."""
    out: dict[str, list[dict] | None] = {}
    for kind in DATA_KINDS:
        value = getattr(spec, kind)
        if value is None:
            out[kind] = None
        elif isinstance(value, str):
            if not allow_paths:
                raise SpecError(f"{kind}: give the rows inline (the CLI and console read the file for you)")
            out[kind] = read_jsonl(Path(value).expanduser(), kind)
        else:
            if not value:
                raise SpecError(f"{kind}: no rows")
            if len(value) > MAX_ROWS:
                raise SpecError(f"{kind}: more than {MAX_ROWS} rows")
            out[kind] = [check_row(r, f"{kind}: row {i}") for i, r in enumerate(value, start=1)]
    return out


__all__ = ["RequestSpec", "SpecError", "parse_spec", "read_spec_file", "load_spec_file", "resolve_rows", "as_qa"]
