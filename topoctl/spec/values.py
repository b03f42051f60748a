"""Parsing of single values (addresses, prefixes) with their errors, and the collector of
problems every builder adds to: shared by build.py and build_netfilter.py."""

from __future__ import annotations

import ipaddress
from typing import Any

from topoctl.errors import Diagnostic
from topoctl.spec.model import IPAddress, IPInterface, IPNetwork


class Problems:
    def __init__(self, file: str, marks: Any) -> None:
        self.file = file
        self.marks = marks
        self.found: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        # Paths of values found invalid (an address, a host:, a subnet): the checks skip what
        # depends on them, so a follow-on error never hides its cause.
        self.flawed: set[tuple] = set()

    def add(self, path: tuple, message: str, hint: str = "", key: bool = False) -> None:
        self._add(path, message, hint, key, rank=0)

    def warn(self, path: tuple, message: str, hint: str = "", key: bool = False) -> None:
        """Valid, but probably not what was meant: reported, and the file is used."""
        line, col = self.marks.at(path, key=key)
        self.warnings.append(Diagnostic(self.file, line, col, message, hint, rank=1))

    def add_between(self, path: tuple, message: str, hint: str = "", key: bool = False) -> None:
        """A problem between objects (a semantic check): listed after those of single values."""
        self._add(path, message, hint, key, rank=1)

    def _add(self, path: tuple, message: str, hint: str, key: bool, rank: int) -> None:
        line, col = self.marks.at(path, key=key)
        self.found.append(Diagnostic(self.file, line, col, message, hint, rank=rank))


def interface(text: str, path: tuple, problems: Problems) -> IPInterface | None:
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        problems.add(path, f"{text!r} is not a valid address with prefix length", "write it as 172.17.0.2/16 or fd00::2/64")
        problems.flawed.add(path)
        return None


def address(text: str, path: tuple, problems: Problems) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        problems.add(path, f"{text!r} is not a valid IP address")
        return None


def network(text: str, path: tuple, problems: Problems, what: str = "subnet") -> IPNetwork | None:
    """A prefix with no host bits set, or None; parsed again loosely so the error can name the
    prefix that was meant."""
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        problems.add(path, f"{text!r} is not a valid {what}")
        return None
    problems.add(path, f"{text!r} has host bits set", f"did you mean {loose}?")
    return None
