"""The JSON Schemas of run configs and presets, shipped inside the package.

``definitions.schema.yaml`` holds every piece both schemas share (box loss, IoU head,
scoring, model, train, predict, data) and every default; ``run.schema.yaml`` is one run
config, ``preset.schema.yaml`` a workflow preset (a matrix over run configs).
:func:`validate` checks a document against one of them, reports every problem as one line
naming the key (``model.box_loss.power``) and what is allowed there, and returns a copy with
the defaults filled in.

Nothing here imports torch: the Snakefile and ``eiou --help`` use it while parsing.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

__all__ = ["SCHEMAS", "SchemaError", "load", "validate"]

#: The schema files of this package, by short name.
SCHEMAS: dict[str, str] = {
    "definitions": "definitions.schema.yaml",
    "run": "run.schema.yaml",
    "preset": "preset.schema.yaml",
}
_BASE_URI = "https://eiou-repro.invalid/schemas/"


class SchemaError(ValueError):
    """A document that does not satisfy its schema; one line per problem."""


def _requirement(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError as err:  # the light core installs neither
        raise ImportError(
            f"validating configs needs the {name!r} package: pip install 'eiou[pipeline]'"
        ) from err


@functools.cache
def _documents() -> dict[str, dict[str, Any]]:
    yaml = _requirement("yaml")
    folder = resources.files(__name__)
    documents = {}
    for name, file in SCHEMAS.items():
        document = yaml.safe_load(folder.joinpath(file).read_text(encoding="utf-8"))
        document["$id"] = _BASE_URI + file  # so that relative $refs resolve in the registry
        documents[name] = document
    return documents


def load(name: str) -> dict[str, Any]:
    """A copy of schema ``name`` (``"run"``, ``"preset"`` or ``"definitions"``), its
    ``$id`` set so that its relative references resolve among the package's schemas."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown schema {name!r}; choose from {sorted(SCHEMAS)}")
    return copy.deepcopy(_documents()[name])


@functools.cache
def _registry() -> Any:
    _requirement("jsonschema")
    from referencing import Registry, Resource

    return Registry().with_resources(
        (_BASE_URI + SCHEMAS[name], Resource.from_contents(doc))
        for name, doc in _documents().items()
    )


@functools.cache
def _validators(name: str) -> tuple[Any, Any]:
    """(checking validator, default-filling validator) of schema ``name``."""
    from jsonschema import validators

    file, _, definition = name.partition("#")
    schema = _documents()[file]
    base = validators.validator_for(schema)
    if definition:  # one definition of the file, resolved against the file's $id
        schema = {"$ref": schema["$id"] + "#/$defs/" + definition}

    def set_defaults(validator, properties, instance, subschema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, subschema)

    filling = validators.extend(base, {"properties": set_defaults})
    return base(schema, registry=_registry()), filling(schema, registry=_registry())


def key_path(path: Iterable[Any], prefix: str = "") -> str:
    """``model.box_loss.power`` / ``tables.t1.rows[0]`` for a jsonschema error path."""
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(error: Any) -> str:
    """One line for a jsonschema error; for oneOf/anyOf, what each alternative wanted."""
    if (
        error.validator == "anyOf"
        and isinstance(error.schema, dict)
        and str(error.schema.get("description", "")).startswith("a registered loss")
    ):
        names = ", ".join(error.schema["anyOf"][0]["enum"])
        return (
            f"{error.instance!r} is neither a registered loss ({names}) nor a dotted import "
            "path (my_pkg.losses.my_loss)"
        )
    if error.validator in ("oneOf", "anyOf") and error.context:
        wanted = sorted({e.message for e in error.context if not e.relative_path})
        if wanted:
            return f"{error.instance!r} is not allowed: " + "; or ".join(wanted)
    if error.validator == "additionalProperties" and isinstance(error.schema, dict):
        allowed = sorted(error.schema.get("properties", {}))
        return f"{error.message}; allowed keys: {allowed}"
    return error.message


def _lines(error: Any, prefix: str) -> list[str]:
    """``config key <path>: <problem>`` lines; an unknown key is named in its own path."""
    where = key_path(error.absolute_path, prefix)
    if (
        error.validator == "additionalProperties"
        and isinstance(error.schema, dict)
        and isinstance(error.instance, dict)
        and "properties" in error.schema
    ):
        allowed = sorted(error.schema["properties"])
        extra = [k for k in error.instance if k not in error.schema["properties"]]
        if extra:
            base = "" if where == "<top level>" else f"{where}."
            return [
                f"config key {base}{key}: unknown key; allowed: {', '.join(allowed)}"
                for key in extra
            ]
    return [f"config key {where}: {_describe(error)}"]


def _deepest(error: Any) -> Any:
    """For a failed ``$ref``/``allOf``/``if``, the error of the sub-schema that failed."""
    while error.validator in ("$ref", "allOf", "then", "else") and error.context:
        error = min(error.context, key=lambda e: len(e.relative_path))
    return error


def validate(
    document: Mapping[str, Any], schema: str, *, where: str = "config", prefix: str = ""
) -> dict[str, Any]:
    """``document`` checked against schema ``schema`` (``"run"``, ``"preset"``, or
    ``"definitions#<name>"`` for one shared definition), with every default filled in;
    ``prefix`` is prepended to the key paths of the messages.

    Raises:
        SchemaError: ``invalid <where>:`` then one line per problem (at most 8), each
            ``config key <path>: <what is wrong and what is allowed>``.
    """
    checker, filler = _validators(schema)
    document = copy.deepcopy(dict(document))
    errors = sorted(
        (_deepest(e) for e in checker.iter_errors(document)),
        key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    if errors:
        lines = [line for e in errors for line in _lines(e, prefix)][:8]
        if len(errors) > 8:
            lines.append(f"... and {len(errors) - 8} more")
        raise SchemaError(f"invalid {where}:\n  " + "\n  ".join(lines))
    filler.validate(document)
    return document
