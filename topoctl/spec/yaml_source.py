"""YAML text -> plain data, with the line and column of every value and key.

The YAML is composed into nodes (never constructed into arbitrary objects) and walked with a
budget against alias bombs. Kept apart from loader.py so that a command served from the cache
of validated files never imports PyYAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from topoctl.errors import Diagnostic, InvalidTopology

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


_CLOSING = {"[": "]", "{": "}"}


def _unclosed_brackets(text: str) -> dict[tuple[int, int], str]:
    """Where each '[' or '{' that is never closed opens, in order, by YAML's own scanner (so
    quotes, comments and brackets inside plain scalars count as YAML counts them). Scanning
    stops at a scanner error; what is open there counts as unclosed."""
    opened: list[tuple[tuple[int, int], str]] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken)):
                opened.append((_pos(token.start_mark), "[" if isinstance(token, yaml.FlowSequenceStartToken) else "{"))
            elif isinstance(token, (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken)) and opened:
                opened.pop()
    except yaml.YAMLError:
        pass
    return dict(opened)  # in the order they open


def _where_it_opens(err: yaml.MarkedYAMLError, text: str) -> tuple[tuple[int, int], str] | None:
    """For an error met inside something left open, where that opens, and the bracket ("" for
    a quote): the parser notices an unclosed '[' only at the next line's ':' or at the end."""
    problem = err.problem or ""
    if err.context_mark is not None and "quoted scalar" in (err.context or "") and "end of stream" in problem:
        return _pos(err.context_mark), ""
    unclosed = _unclosed_brackets(text)
    where = None
    flow = err.context_mark is not None and (err.context or "").startswith("while parsing a flow")
    if flow and _pos(err.context_mark) in unclosed:
        where = _pos(err.context_mark)  # the collection the parser was in never closes
    if where is None and ("end of stream" in problem or "<stream end>" in problem) and unclosed:
        where = list(unclosed)[-1]
    return None if where is None else (where, unclosed[where])


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
        message = err.problem or err.context or "malformed YAML"
        if err.context and err.problem:
            message = f"{err.context}, {err.problem}"
        hint = "check indentation, colons and quotes"
        line, col = _pos(err.problem_mark or err.context_mark)
        opened = _where_it_opens(err, text)
        if opened is not None:
            # Something left open is reported where it opens, not where the parser gave up.
            (line, col), bracket = opened
            if bracket:
                stop = _pos(err.problem_mark)
                message = f"{bracket!r} is never closed: {message} at line {stop[0]}, column {stop[1]}"
                hint = f"close it with {_CLOSING[bracket]!r}"
        raise InvalidTopology([Diagnostic(file, line, col, f"malformed YAML: {message}", hint)]) from None
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
