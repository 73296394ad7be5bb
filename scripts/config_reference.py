"""Print the coe.yaml reference (markdown) from the pydantic config models, so the README cannot drift."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from router_service.config.apps import RouterAppConfig
from router_service.config.service import ExpertConfig, ServiceConfig


def _type_name(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("router_service.config.service.", "").replace("router_service.config.gateway.", "")


def rows(model: type[BaseModel], prefix: str) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = args[0] if origin is list and args else None
        if (
            origin in (typing.Union, getattr(__import__("types"), "UnionType", None))
            and len(args) == 1
            and isinstance(args[0], type)
            and issubclass(args[0], BaseModel)
        ):
            annotation = args[0]  # an optional section: list its fields
            out.append(f"| `{path}` | section | `None` | {field.description or ''} |")
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += rows(annotation, path + ".")
            continue
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out += rows(inner, path + "[].")
            continue
        if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            out.append(f"| `{path}` | `dict[str, ...]` | `{{}}` | {field.description or ''} |")
            out += rows(args[1], path + ".<id>.")
            continue
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        out.append(f"| `{path}` | `{_type_name(annotation)}` | `{default}` | {field.description or ''} |")
    return out


def table(model: type[BaseModel], prefix: str = "", skip: tuple[str, ...] = ()) -> str:
    lines = [row for row in rows(model, prefix) if not row.split("`")[1].startswith(skip)]
    return "\n".join(["| field | type | default | meaning |", "|---|---|---|---|", *lines])


if __name__ == "__main__":
    print("Router application `args` (`deployments.app:build_router_app`):\n")
    print(table(RouterAppConfig))
    print("\nExpert application `args` (`deployments.app:build_expert_app`), one application per expert:\n")
    print(table(ExpertConfig))
    print(
        "\nOne application for everything (`deployments.app:build_app`): the router fields above without "
        "`discovery`, and the experts as a list:\n"
    )
    print(
        table(
            ServiceConfig,
            skip=(
                "experts[].",
                "router.",
                "aggregation.",
                "server.",
                "router_deployment.",
                "gateway.",
                "fit.",
                "residency.",
            ),
        ).replace(
            "|---|---|---|---|",
            "|---|---|---|---|\n| `experts[]` | `list` | required | One expert application's args each. |",
            1,
        )
    )
