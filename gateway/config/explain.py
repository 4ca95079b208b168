"""Turn pydantic validation errors into ``file:line key: message`` problems.

Two things make raw pydantic errors hard for a technician: with discriminated unions the
error location contains the tag value (``devices.2.customer.customer_id``), which is not a
key in the file; and some messages speak pydantic rather than TOML. This module walks the
model alongside each location to drop the tags, and rewrites the few messages that need it.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from gateway.config.locate import KeyPath, TomlLocator, format_key
from gateway.config.models import BOTH_LOCATIONS
from gateway.config.problems import ConfigProblem


def explain(
    exc: ValidationError, model: Any, file: Path, locator: TomlLocator, *, secret: bool = False
) -> list[ConfigProblem]:
    """One problem per pydantic error of validating a file against ``model``.

    ``model`` is the type validated (a model class or an annotation such as ``Device``).
    With ``secret`` the problems carry pydantic's fixed message text only, never anything
    derived from the input: the credentials file holds the AURA secret.
    """
    problems: list[ConfigProblem] = []
    # include_input=False: the input value must not survive even in memory we hand out.
    for err in exc.errors(include_url=False, include_input=False, include_context=True):
        where = _walk(model, err["loc"])
        path, message = _describe(err, where, secret=secret)
        problems.append(ConfigProblem(file, locator.best_line(path), format_key(path), message))
    return problems


@dataclass
class _Where:
    path: KeyPath  # the key path in the file, tags dropped
    owner: type[BaseModel] | None  # the model whose field the last key names
    tags: tuple[str, ...]  # expected tag values when the path ends at a tagged union
    discriminator: str | None


def _describe(err: Any, where: _Where, *, secret: bool) -> tuple[KeyPath, str]:
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    path = where.path
    if kind in ("union_tag_invalid", "union_tag_not_found") and where.discriminator:
        disc = where.discriminator
        tags = ", ".join(repr(t) for t in where.tags)
        choice = f"must be {tags}" if len(where.tags) == 1 else f"must be one of {tags}"
        if kind == "union_tag_not_found":
            return (*path, disc), f"Field required: {disc} {choice}"
        got = "" if secret else f" (got {ctx.get('tag')!r})"
        return (*path, disc), f"{disc} {choice}{got}"
    if kind == "extra_forbidden":
        key = path[-1] if path else ""
        if key == "predefined_location_id" and "location" in path[:-1]:
            return path, BOTH_LOCATIONS
        return path, _unknown_key(key, where.owner)
    message: str = err["msg"]
    if secret and kind == "too_short" and ctx.get("min_length") == 1:
        # pydantic words SecretStr's length check as if it were a list.
        return path, "must not be empty"
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return path, message


def _unknown_key(key: str | int, owner: type[BaseModel] | None) -> str:
    if owner is not None and isinstance(key, str):
        close = difflib.get_close_matches(key, list(owner.model_fields), n=1)
        if close:
            return f"unknown key (typo? did you mean {close[0]!r}?)"
    return "unknown key (typo?)"


# --------------------------------------------------------------------------- model walk


def _walk(model: Any, loc: Sequence[str | int]) -> _Where:
    """Follow ``loc`` through the type ``model``, dropping discriminator tags."""
    path: list[str | int] = []
    tp: Any = model
    disc: str | None = None
    owner: type[BaseModel] | None = None
    for item in loc:
        tp, disc = _unwrap(tp, disc)
        members = _models(tp)
        if members and disc and isinstance(item, str):
            tagged = _member_for_tag(members, disc, item)
            if tagged is not None and all(item not in m.model_fields for m in members):
                tp, disc = tagged, None
                continue
        path.append(item)
        if members:
            owner = next((m for m in members if item in m.model_fields), members[0])
            field: FieldInfo | None = owner.model_fields.get(str(item))
            tp, disc = (field.annotation, field.discriminator) if field else (None, None)
            if not isinstance(disc, str):
                disc = None  # a callable Discriminator: no tag names to report
            continue
        origin = get_origin(tp)
        if origin in (list, tuple, set, frozenset):
            tp, disc = get_args(tp)[0], None
        elif origin is dict:
            tp, disc = get_args(tp)[1], None
        else:
            tp, disc = None, None
    tp, disc = _unwrap(tp, disc)
    tags = tuple(_tags(_models(tp), disc)) if disc else ()
    return _Where(tuple(path), owner, tags, disc)


def _unwrap(tp: Any, disc: str | None) -> tuple[Any, str | None]:
    """Strip ``Annotated``, picking up a ``Field(discriminator=...)`` on the way."""
    while get_origin(tp) is Annotated:
        tp, *meta = get_args(tp)
        for m in meta:
            if isinstance(m, FieldInfo) and isinstance(m.discriminator, str):
                disc = m.discriminator
    return tp, disc


def _models(tp: Any) -> list[type[BaseModel]]:
    """The model classes ``tp`` stands for: itself, or the members of a union (None aside)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if get_origin(tp) in (Union, types.UnionType):
        members = [_unwrap(a, None)[0] for a in get_args(tp) if a is not type(None)]
        if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return members
    return []


def _member_literals(member: type[BaseModel], disc: str) -> tuple[Any, ...]:
    field = member.model_fields.get(disc)
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return get_args(field.annotation)


def _member_for_tag(members: list[type[BaseModel]], disc: str, tag: str) -> type[BaseModel] | None:
    return next((m for m in members if tag in _member_literals(m, disc)), None)


def _tags(members: list[type[BaseModel]], disc: str) -> Iterator[str]:
    for m in members:
        yield from (str(v) for v in _member_literals(m, disc))
