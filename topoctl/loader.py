"""YAML (safe) with line/column marks -> JSON Schema -> model. Reports every problem at once.

The YAML is composed into nodes (never constructed into arbitrary objects), walked with a
budget against alias bombs, and turned into plain data plus a map from each key path to its
line and column. Schema errors and semantic errors are then reported at those places.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

import yaml

from . import compiled
from .errors import Diagnostic, InvalidTopology
from .model import Topology

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64

# libyaml's parser when PyYAML was built with it (about ten times faster), else PyYAML's own.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


@dataclass(frozen=True)
class Marks:
    """Where each value (and each mapping key) sits in the file."""

    values: dict[tuple, tuple[int, int]]
    keys: dict[tuple, tuple[int, int]]

    def at(self, path: tuple, key: bool = False) -> tuple[int, int]:
        """The closest known place for a path: the key itself if asked, else the value."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0


class _Problem(Exception):
    def __init__(self, mark: yaml.Mark | None, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message
        self.hint = hint


def _pos(mark: yaml.Mark | None) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


def _to_data(node: yaml.Node, path: tuple, marks: Marks, budget: _Budget, loader: yaml.SafeLoader, depth: int = 0) -> Any:
    budget.nodes += 1
    if budget.nodes > MAX_NODES:
        raise _Problem(node.start_mark, f"document too large: more than {MAX_NODES} values (an alias bomb?)")
    if depth > MAX_DEPTH:
        raise _Problem(node.start_mark, f"document nested deeper than {MAX_DEPTH} levels")
    marks.values.setdefault(path, _pos(node.start_mark))
    if isinstance(node, yaml.ScalarNode):
        if node.tag not in _SCALAR_TAGS:
            raise _Problem(node.start_mark, f"unsupported YAML tag {node.tag!r}", "topology files use plain YAML values only")
        if node.tag == _YAML + "timestamp":
            return node.value  # a date-like string stays a string
        return loader.construct_object(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _YAML + "seq":
            raise _Problem(node.start_mark, f"unsupported YAML tag {node.tag!r}")
        return [_to_data(item, path + (i,), marks, budget, loader, depth + 1) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        if node.tag != _YAML + "map":
            raise _Problem(node.start_mark, f"unsupported YAML tag {node.tag!r}")
        result: dict[str, Any] = {}
        first_seen: dict[str, yaml.Mark] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _YAML + "merge":
                merges.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise _Problem(key_node.start_mark, "a mapping key must be a plain scalar")
            key = str(key_node.value)
            if key in first_seen:
                line, _ = _pos(first_seen[key])
                raise _Problem(key_node.start_mark, f"duplicate key {key!r} (first given at line {line})")
            first_seen[key] = key_node.start_mark
            marks.keys[path + (key,)] = _pos(key_node.start_mark)
            result[key] = _to_data(value_node, path + (key,), marks, budget, loader, depth + 1)
        # '<<' merges come after the explicit keys, so explicit keys keep their own places.
        for source in merges:
            data = _to_data(source, path, marks, budget, loader, depth + 1)
            if not isinstance(data, dict):
                raise _Problem(source.start_mark, "a merge key '<<' needs a mapping")
            for key, value in data.items():
                result.setdefault(key, value)
        return result
    raise _Problem(getattr(node, "start_mark", None), "unsupported YAML node")


def _unclosed_bracket(text: str) -> tuple[int, int] | None:
    """The line and column of the last '[' or '{' never closed, outside quotes and comments."""
    stack: list[tuple[int, int]] = []
    quote = ""
    for line_no, line in enumerate(text.splitlines(), start=1):
        previous = " "
        for col_no, char in enumerate(line, start=1):
            if quote:
                if char == quote:
                    quote = ""
            elif char in "\"'" and previous in " [{,:":
                quote = char
            elif char == "#" and previous.isspace():
                break
            elif char in "[{":
                stack.append((line_no, col_no))
            elif char in "]}" and stack:
                stack.pop()
            previous = char
    return stack[-1] if stack else None


def parse_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Plain data and marks from YAML text; raises InvalidTopology on malformed input.

    libyaml parses (fast); a file it refuses is parsed again by PyYAML's own parser, whose
    messages and positions are the ones topoctl reports."""
    if _LOADER is not yaml.SafeLoader:
        try:
            return _parse_yaml(text, file, _LOADER)
        except InvalidTopology as invalid:
            if not any(d.message.startswith("malformed YAML") or "nested" in d.message for d in invalid.diagnostics):
                raise
    return _parse_yaml(text, file, yaml.SafeLoader)


def _parse_yaml(text: str, file: str, loader_class) -> tuple[Any, Marks]:
    marks = Marks(values={}, keys={})
    loader = None
    try:
        loader = loader_class(text)  # the reader already rejects control characters here
        node = loader.get_single_node()
        if node is None:
            raise InvalidTopology([Diagnostic(file, 1, 1, "the file is empty", "start from topologies/docker0.yaml")])
        data = _to_data(node, (), marks, _Budget(), loader)
    except yaml.MarkedYAMLError as err:
        line, col = _pos(err.problem_mark or err.context_mark)
        if "end of stream" in (err.problem or "") or "<stream end>" in (err.problem or ""):
            # Something was left open: point at where it opens, not at the end of the file.
            if err.context_mark is not None and "quoted scalar" in (err.context or ""):
                line, col = _pos(err.context_mark)
            else:
                line, col = _unclosed_bracket(text) or (line, col)
        message = err.problem or err.context or "malformed YAML"
        if err.context and err.problem:
            message = f"{err.context}, {err.problem}"
        raise InvalidTopology([Diagnostic(file, line, col, f"malformed YAML: {message}",
                                          "check indentation, colons and quotes")]) from None
    except yaml.reader.ReaderError as err:
        before = text[: err.position]
        line, col = before.count("\n") + 1, err.position - (before.rfind("\n") + 1) + 1
        raise InvalidTopology([Diagnostic(file, line, col, f"malformed YAML: {err.reason} (character {err.character!r})",
                                          "remove control characters from the file")]) from None
    except yaml.YAMLError as err:
        raise InvalidTopology([Diagnostic(file, 1, 1, f"malformed YAML: {err}")]) from None
    except _Problem as problem:
        line, col = _pos(problem.mark)
        raise InvalidTopology([Diagnostic(file, line, col, problem.message, problem.hint)]) from None
    except RecursionError:
        # PyYAML's composer recurses per level; where its reader stopped is where the nesting is.
        line, col = _pos(loader.get_mark()) if loader is not None else (1, 1)
        raise InvalidTopology([Diagnostic(file, line, col, "document nested too deeply",
                                          f"topology files need no more than {MAX_DEPTH} levels")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, marks


def load_schema() -> dict:
    text = resources.files("topoctl").joinpath("topology.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


_VALIDATOR = None  # a jsonschema.Draft202012Validator, made (and jsonschema imported) on first use


def _inline_refs(node: Any, root: dict) -> Any:
    """The schema with every local $ref replaced by what it points at. The schema has no
    recursion, and resolving references at validation time costs jsonschema more than all
    the other checks together (measured: half of the time for 1000 containers)."""
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
        allowed = sorted(schema.get("properties", {}))
        out = []
        for extra in sorted(set(error.instance) - set(allowed)):
            close = difflib.get_close_matches(extra, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else "")
            out.append(at(path + (extra,), f"unknown key {extra!r} in {where}", hint, key=True))
        return out
    if kind == "unevaluatedProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        return [at(path + (extra,), f"unknown key {extra!r} in {where}", f"allowed keys: {', '.join(allowed)}", key=True)
                for extra in sorted(set(error.instance) - set(allowed))]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else str(error.validator_value)
        return [at(path, f"missing key {missing!r} in {where}")]
    if error.path != error.relative_path:  # pragma: no cover - defensive
        pass
    if kind == "propertyNames" or (error.parent is not None and error.parent.validator == "propertyNames"):
        return [at(path + (str(error.instance),), f"bad name {error.instance!r}: {schema.get('x-message', error.message)}", key=True)]
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


def _find_propertynames_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    if error.validator == "propertyNames" and error.context:
        return list(error.context)
    return [error]


def validate_schema(data: Any, file: str, marks: Marks) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for error in _validator().iter_errors(data):
        for leaf in _find_propertynames_errors(error):
            diagnostics.extend(_schema_diagnostics(leaf, file, marks))
    return diagnostics


def load_text(text: str, file: str = "<string>") -> Topology:
    """Parse, validate and build a Topology; raises InvalidTopology with every problem."""
    from .build import build_topology  # the builder needs marks; imported here to keep layers clear

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
        return dataclasses.replace(cached, source=file)
    topology = load_text(text, file)
    compiled.store(raw, topology)
    return topology
