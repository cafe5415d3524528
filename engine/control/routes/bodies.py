"""The bodies the API accepts: unknown fields are refused, and so is text that is not valid Unicode."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.control.routes.deps import MAX_ID
from engine.schema.datasets import lone_surrogate
from engine.schema.tuning import TuneSpec


class BodyIn(BaseModel):
    """A request body: unknown fields refused, and text that is not valid Unicode refused by its path."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        where = lone_surrogate(data, "")
        if where is not None:
            raise ValueError(f"{where}: not valid Unicode (a lone surrogate code point)")
        return data


class ModelIn(BodyIn):
    name: str = Field(min_length=1, max_length=100)
    source: str = Field(min_length=1, max_length=4096)
    options: dict = Field(default_factory=dict)
    retain_path: str | None = None
    holdout_path: str | None = None


class RequestIn(BodyIn):
    spec: dict
    method: str | None = None
    hyper: dict | None = None
    start: bool = True
    auto_escalate: bool = False
    # Tune each job of this request ({"trials", "minutes", "seed"}); with auto_escalate, every tier it climbs.
    tune: TuneSpec | None = None


class JobIn(BodyIn):
    request_id: int = Field(ge=0, le=MAX_ID)
    method: str
    hyper: dict | None = None


class EscalateIn(BodyIn):
    method: str | None = None
    hyper: dict | None = None
    tune: TuneSpec | None = None  # `escalate --tune`: search the method's hyperparameters first


class AcceptIn(BodyIn):
    job_id: int = Field(ge=0, le=MAX_ID)
    comment: str | None = Field(default=None, max_length=2000)  # the approver's, kept in the audit chain


class ExtendIn(BodyIn):
    days: int = Field(ge=1, le=60)
    reason: str = Field(min_length=1, max_length=500)


class TokenIn(BodyIn):
    name: str = Field(min_length=1, max_length=64)
    roles: list[str] = Field(min_length=1, max_length=3)


class PurgeCheckIn(BodyIn):
    """The operator's copy of a request's texts: checked against the kept hashes, then searched for."""

    forget: list[dict] | None = Field(default=None, max_length=100_000)
    sensitive: list[str] | None = Field(default=None, max_length=1000)
    strings: list[str] = Field(default_factory=list, max_length=10_000)
