"""YAML (safe) with line/column marks -> JSON Schema -> model. Reports every problem at once.

yaml_source.py turns the text into plain data plus a map from each key path to its line and
column; schema errors and semantic errors are then reported at those places. A file whose exact
bytes were validated before comes from the cache (compiled.py) without parsing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from topoctl.spec import compiled
from topoctl.errors import Diagnostic, InvalidTopology
from topoctl.spec.model import Topology

if TYPE_CHECKING:
    import jsonschema

    from topoctl.spec.yaml_source import Marks

MAX_FILE_BYTES = 4 * 1024 * 1024


def load_schema() -> dict:
    from importlib import resources  # with zipfile: an import a cached load never needs

    text = resources.files("topoctl.spec").joinpath("topology.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


_VALIDATOR = None  # a jsonschema.Draft202012Validator, made (and jsonschema imported) on first use


def _inline_refs(node: Any, root: dict) -> Any:
    """The schema with every local $ref replaced by what it points at. The schema has no
    recursion, and resolving references at validation time costs jsonschema more than all
    the other checks together."""
    if isinstance(node, list):
        return [_inline_refs(item, root) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _inline_refs({**target, **siblings}, root)
    return {key: (_inline_refs(value, root) if key != "$defs" else value) for key, value in node.items()}


def _validator() -> jsonschema.Draft202012Validator:
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema  # 0.1 s to import: not needed when the file comes from the cache

        schema = load_schema()
        _VALIDATOR = jsonschema.Draft202012Validator(_inline_refs(schema, schema))
    return _VALIDATOR


_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "boolean": "true or false", "null": "nothing", "number": "a number"}


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "nothing"


def _schema_diagnostics(error: jsonschema.ValidationError, file: str, marks: Marks) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    where = ".".join(str(p) for p in path) or "the document"
    schema = error.schema if isinstance(error.schema, dict) else {}

    def at(p: tuple, message: str, hint: str = "", key: bool = False) -> Diagnostic:
        line, col = marks.at(p, key=key)
        return Diagnostic(file, line, col, message, hint)

    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        import difflib  # here: only a file with an unknown key needs it

        allowed = sorted(schema.get("properties", {}))
        out = []
        for extra in sorted(set(error.instance) - set(allowed)):
            close = difflib.get_close_matches(extra, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else "")
            out.append(at(path + (extra,), f"unknown key {extra!r} in {where}", hint, key=True))
        return out
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else str(error.validator_value)
        return [at(path, f"missing key {missing!r} in {where}")]
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        names = " or ".join(_TYPE_NAMES.get(w, w) for w in wanted if w != "null") or "nothing"
        return [at(path, f"{where}: expected {names}, got {_kind_of(error.instance)}")]
    if kind == "const":
        return [at(path, f"{where}: expected {error.validator_value!r}, got {error.instance!r}")]
    if kind == "enum":
        options = ", ".join(repr(v) for v in error.validator_value)
        return [at(path, f"{where}: expected one of {options}, got {error.instance!r}")]
    if kind in ("pattern", "maxLength", "minLength") and "x-message" in schema:
        return [at(path, f"{where}: {error.instance!r} is invalid: {schema['x-message']}")]
    if kind in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        return [at(path, f"{where}: {error.instance!r} is out of range ({low} to {high})")]
    if kind in ("minItems", "maxItems") and path and path[-1] == "endpoints":
        return [at(path, f"{where}: a veth link has exactly two endpoints, got {len(error.instance)}")]
    return [at(path, f"{where}: {error.message}")]


def validate_schema(data: Any, file: str, marks: Marks) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for error in _validator().iter_errors(data):
        diagnostics.extend(_schema_diagnostics(error, file, marks))
    return diagnostics


def load_text(text: str, file: str = "<string>") -> Topology:
    """Parse, validate and build a Topology; raises InvalidTopology with every problem."""
    from topoctl.spec.build import build_topology  # the builder needs marks; imported here to keep layers clear

    from topoctl.spec.yaml_source import parse_yaml  # here: PyYAML is imported only when a file is parsed

    data, marks = parse_yaml(text, file)
    diagnostics = validate_schema(data, file, marks)
    if diagnostics:
        raise InvalidTopology(diagnostics)
    topology, diagnostics = build_topology(data, file, marks)
    if diagnostics:
        raise InvalidTopology(diagnostics)
    return topology


def load_file(path: str | FsPath) -> Topology:
    file = str(path)
    try:
        raw = FsPath(path).read_bytes()[: MAX_FILE_BYTES + 1]
    except FileNotFoundError:
        raise InvalidTopology([Diagnostic(file, 0, 0, "no such file", "check the path")]) from None
    except IsADirectoryError:
        raise InvalidTopology([Diagnostic(file, 0, 0, "is a directory, not a topology file")]) from None
    except OSError as err:
        raise InvalidTopology([Diagnostic(file, 0, 0, f"cannot read: {err.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidTopology([Diagnostic(file, 1, 1, f"file larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        before = raw[: err.start]
        line = before.count(b"\n") + 1
        col = err.start - (before.rfind(b"\n") + 1) + 1
        raise InvalidTopology([Diagnostic(file, line, col, "the file is not valid UTF-8", "save it as UTF-8")]) from None
    if "\x00" in text:
        raise InvalidTopology([Diagnostic(file, 1, 1, "the file contains NUL bytes; it is not a YAML text file")])
    cached = compiled.lookup(raw)
    if cached is not None:
        return dataclasses.replace(cached, source=file,
                                   warnings=tuple(dataclasses.replace(w, file=file) for w in cached.warnings))
    topology = load_text(text, file)
    compiled.store(raw, topology)
    return topology
