"""``dermlearn train``'s recipe flags, generated from the
:class:`~dermlearn.training.recipes.Recipe` model: one ``--field-name`` per chosen field, its
help the field's description and default (as every ``dermlearn`` option: ``(default: X)``,
none shown for a default that is None or off).

A flag's value goes to the recipe as given (text), so the Recipe checks it like a config file's
value and a wrong one is a :class:`~dermlearn.training.recipes.RecipeError` naming the field;
choice fields list their choices; a bool field is a switch that turns it on. Unset flags change
nothing. Fields without a flag are set with ``--set FIELD=VALUE``.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from dermlearn.errors.validation import choices_of, kinds_of
from dermlearn.training.recipes import Recipe

__all__ = ["FLAG_FIELDS", "add_recipe_flags", "flag_name", "recipe_overrides"]

#: The recipe fields with a flag of their own, in the order ``--help`` lists them.
FLAG_FIELDS = ("backbone", "weights", "mode", "unfreeze", "epochs", "batch_size", "lr", "folds",
               "refit", "val_fraction", "seed", "image_size", "color_constancy",
               "max_class_size", "num_workers", "metadata", "head", "precision", "sampler",
               "class_cap", "early_stopping", "augment", "teacher", "devices", "num_nodes",
               "strategy")
#: Metavars where the field name is not the clearest one.
METAVARS = {"teacher": "MODEL", "color_constancy": "P", "early_stopping": "PATIENCE", "image_size": "N|HxW",
            "weights": "WEIGHTS", "max_class_size": "N", "class_cap": "N", "folds": "K", "devices": "N",
            "num_nodes": "N", "num_workers": "N", "unfreeze": "N"}


def flag_name(field: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + field.replace("_", "-")


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return "x".join(map(str, value))
    return str(value)


def _value(optional: bool):
    """The argparse ``type`` of a flag: the text as given ("none"/"null": None for an optional
    field that takes no text), for the Recipe to check."""
    def parse(text: str) -> Any:
        return None if optional and text.strip().lower() in ("none", "null") else text

    return parse


def add_recipe_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                     fields: Sequence[str] = FLAG_FIELDS) -> tuple[str, ...]:
    """Add one flag per recipe field in ``fields`` to ``parser``; returns their dests (the field
    names). Unset flags leave no attribute on the parsed namespace."""
    for name in fields:
        info = Recipe.model_fields[name]
        kinds = kinds_of(info.annotation)
        help_text = (info.description or name).replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        choices = choices_of(info.annotation)
        if kinds == ("bool",):
            kwargs["action"] = "store_true"
        elif choices:
            kwargs["choices"] = list(choices)
        else:
            kwargs["type"] = _value(optional="None" in kinds and "str" not in kinds)
            kwargs["metavar"] = METAVARS.get(name, name.upper())
        if info.default is not None and info.default is not False:  # None/off: nothing to show
            help_text += f" (default: {_show(info.default)})"  # the declared default, as is
        parser.add_argument(flag_name(name), help=help_text, **kwargs)
    return tuple(fields)


def recipe_overrides(args: argparse.Namespace,
                     fields: Sequence[str] = FLAG_FIELDS) -> dict[str, Any]:
    """The recipe fields set on the command line (field name -> value as given)."""
    return {name: getattr(args, name) for name in fields if hasattr(args, name)}
