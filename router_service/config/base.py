"""The base of every config model: unknown keys are refused, so a typo fails at start-up, named."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
