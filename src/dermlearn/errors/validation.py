"""Settings as pydantic models whose validation errors read like the rest of dermlearn's.

:class:`ValidatedModel` is a pydantic ``BaseModel`` that raises its ``error`` class (a
:class:`~dermlearn.errors.DermlearnError`) instead of pydantic's ``ValidationError``, one line
per problem, each naming the field and what it wants ("recipe field epochs must be >= 1, not
0"). Its inputs are read as a config file means them: numbers written as text ("5e-4", which
YAML 1.1 reads as a string) are numbers, numbers are text for text fields, but a bool is never a
number and only a bool is a bool.
"""
from __future__ import annotations

import types
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from dermlearn.errors import DermlearnError

__all__ = ["ValidatedModel", "choices_of", "kinds_of", "problem"]

#: How a kind of value is named in an error ("must be an integer or null").
WANTED = {"int": "an integer", "float": "a number", "bool": "true/false", "str": "a string",
          "None": "null", "list": "a list", "dict": "a mapping"}
RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def problem(message: str) -> PydanticCustomError:
    """An error for a validator to raise: ``message`` is shown as it is, as one problem."""
    return PydanticCustomError("dermlearn", "{message}", {"message": message})


def kinds_of(annotation: Any) -> tuple[str, ...]:
    """The kinds of value an annotation takes, in order: ``int | None`` -> ("int", "None");
    a ``Literal`` is "literal"."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return kinds_of(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return tuple(k for arg in get_args(annotation) for k in kinds_of(arg))
    if origin is Literal:
        return ("literal",)
    if annotation is type(None) or annotation is None:
        return ("None",)
    if annotation in (int, float, bool, str):
        return (annotation.__name__,)
    if annotation in (list, tuple) or origin in (list, tuple):
        return ("list",)
    if annotation is dict or origin is dict:
        return ("dict",)
    return (getattr(annotation, "__name__", str(annotation)),)


def choices_of(annotation: Any) -> tuple | None:
    """The values of the ``Literal`` in an annotation (``Literal["a", "b"] | None`` too)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return get_args(annotation)
    if origin in (Annotated, Union, types.UnionType):
        for arg in get_args(annotation)[:1] if origin is Annotated else get_args(annotation):
            found = choices_of(arg)
            if found is not None:
                return found
    return None


def _span(metadata: list) -> str | None:
    """The declared range of a field in words: ">= 1", "in [0, 1)", "> 0"."""
    low = high = None
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            low = ("[", m.ge)
        elif isinstance(m, annotated_types.Gt):
            low = ("(", m.gt)
        elif isinstance(m, annotated_types.Le):
            high = ("]", m.le)
        elif isinstance(m, annotated_types.Lt):
            high = (")", m.lt)
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]}"
    return None


class ValidatedModel(BaseModel):
    """A pydantic model that raises ``error`` naming each wrong field (see the module doc).

    Fields may also be given positionally, in their declared order, as a dataclass takes them.
    """

    #: The exception raised for invalid values, and how a field is called in its message.
    error: ClassVar[type[DermlearnError]] = DermlearnError
    what: ClassVar[str] = "field"
    #: Per-field messages replacing the generated one: format fields {name}, {value},
    #: {wanted}, {choices}, {span}.
    messages: ClassVar[dict[str, str]] = {}

    def __init__(self, /, *args: Any, **data: Any) -> None:
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional "
                            f"arguments, got {len(args)}")
        for name, value in zip(names, args):
            if name in data:
                raise TypeError(f"{type(self).__name__} got {name} twice")
            data[name] = value
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self.error("\n".join(type(self).problems(exc))) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise cls.error("\n".join(cls.problems(exc))) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise cls.error("\n".join(cls.problems(exc))) from None

    @classmethod
    def problems(cls, exc: ValidationError) -> list[str]:
        """One line per problem of ``exc`` (the first per field), unknown fields first."""
        lines: list[str] = []
        unknown: list[str] = []
        seen: set = set()
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]) if err["loc"] else None
            if err["type"] == "extra_forbidden":
                unknown.append(name)
            elif name not in seen or name is None:
                seen.add(name)
                lines.append(cls._problem(name, err))
        if unknown:
            lines.insert(0, f"unknown {cls.what}(s) {sorted(unknown)}; known: "
                            f"{', '.join(cls.model_fields)}")
        return lines

    @classmethod
    def _problem(cls, name: str | None, err: dict) -> str:
        if err["type"] == "dermlearn" or name not in cls.model_fields:
            return str(err.get("ctx", {}).get("message", err["msg"]))
        info = cls.model_fields[name]
        kinds = kinds_of(info.annotation)
        value = err.get("input")
        choices = choices_of(info.annotation) or ()
        wanted = " or ".join(WANTED.get(k, k) for k in kinds if k != "literal")
        if "float" in kinds:
            wanted += " (finite)"
        span = _span(info.metadata)
        if name in cls.messages:
            return cls.messages[name].format(name=name, value=value, wanted=wanted,
                                             choices=", ".join(map(str, choices)), span=span)
        if err["type"] == "missing":
            return f"{cls.what} {name} is required"
        if err["type"] == "literal_error" and choices:
            return (f"{cls.what} {name}={value!r} is not one of "
                    f"{', '.join(map(str, choices))}")
        if err["type"] in RANGE_ERRORS and span:
            return f"{cls.what} {name} must be {span}, not {value}"
        return f"{cls.what} {name} must be {wanted}, not {value!r}"

    @field_validator("*", mode="before")
    @classmethod
    def _read_as_config(cls, value: Any, info: ValidationInfo) -> Any:
        """Text numbers stay for pydantic to read; numbers become text for text fields; a bool
        is only a bool (never 1 or 0, nor "yes")."""
        kinds = _field_kinds(cls, info.field_name)
        if value is None or "list" in kinds or "dict" in kinds:
            return value
        if "bool" in kinds:
            if isinstance(value, bool):
                return value
            raise PydanticCustomError("bool_type", "not a bool")
        if isinstance(value, bool):
            if "int" in kinds or "float" in kinds:
                raise PydanticCustomError("number_type", "a bool is not a number")
            return value
        if ("str" in kinds or "literal" in kinds) and isinstance(value, (int, float)) \
                and "int" not in kinds and "float" not in kinds:
            return str(value)
        return value


@cache
def _field_kinds(cls: type[BaseModel], name: str) -> tuple[str, ...]:
    return kinds_of(cls.model_fields[name].annotation)
