"""nftables tables as text: the script that writes a table whole in one transaction, and the
reading of what `nft list table` prints back into the same NftTable. Pure."""

from __future__ import annotations

import re

from topoctl.core.state import NftChain, NftTable, Scope

_ANONYMOUS_SET = re.compile(r"\{ ([^{}]*) \}")


def canonical_rule(rule: str) -> str:
    """A rule with the elements of each anonymous set sorted: nft prints them in the order of
    its own key encoding, not as written, so both sides of a comparison are sorted alike."""
    return _ANONYMOUS_SET.sub(lambda m: "{ " + ", ".join(sorted(m.group(1).split(", "))) + " }", rule)


def table_body(table: NftTable) -> str:
    """The table as `nft list table` prints it (tabs, a blank line between chains)."""
    lines = [f"table {table.family} {table.name} {{"]
    for i, chain in enumerate(table.chains):
        if i:
            lines.append("")
        lines.append(f"\t{chain.name} {{" if " " in chain.name else f"\tchain {chain.name} {{")
        if chain.header:
            lines.append(f"\t\t{chain.header}")
        lines += [f"\t\t{rule}" for rule in chain.rules]
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def replace_script(table: NftTable) -> str:
    """One nft transaction that leaves exactly `table`: it is declared (so that the delete
    finds it), deleted with everything in it, and written again. All of it or nothing applies."""
    return (f"table {table.family} {table.name}\n"
            f"delete table {table.family} {table.name}\n"
            + table_body(table))


def delete_script(family: str, name: str) -> str:
    """Deletes the table if it exists (declaring it first makes a missing one no error)."""
    return f"table {family} {name}\ndelete table {family} {name}\n"


def parse_tables(text: str, scope: Scope) -> list[NftTable]:
    """`nft list table ...` (or `list ruleset`) output -> tables. A block that is not a chain
    (a set, a map, a flowtable) is kept as a chain named by its kind and name, so a table that
    holds one compares unequal to any table topoctl writes."""
    tables: list[NftTable] = []
    family = name = None
    chains: list[NftChain] = []
    block: str | None = None
    header = ""
    rules: list[str] = []
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if depth == 0:
            words = line.rstrip("{").split()
            if len(words) >= 3 and words[0] == "table":
                family, name, chains = words[1], words[2], []
                depth = 1
            continue
        if depth == 1:
            if line == "}":
                tables.append(NftTable(scope, family, name, tuple(chains)))
                depth = 0
                continue
            words = line.rstrip("{").split()
            block = words[1] if words[0] == "chain" and len(words) > 1 else " ".join(words)
            header, rules = "", []
            depth = 2
            continue
        if line == "}" and depth == 2:
            chains.append(NftChain(block, header, tuple(rules)))
            depth = 1
            continue
        if line.endswith("{"):
            depth += 1
        elif line.startswith("}"):
            depth -= 1
        if depth == 2 and not rules and not header and line.startswith("type ") and line.endswith(";"):
            header = line
        else:
            rules.append(canonical_rule(line))
    return tables


def rule_changes(old: NftTable | None, new: NftTable | None) -> list[tuple[str, str, str]]:
    """(sign, chain, text) of what differs: '+'/'-' rules, '~' a chain's header; a table that
    appears or goes is all its rules."""
    before = {c.name: c for c in (old.chains if old else ())}
    after = {c.name: c for c in (new.chains if new else ())}
    out: list[tuple[str, str, str]] = []
    for name in list(dict.fromkeys([*before, *after])):
        a, b = before.get(name), after.get(name)
        if a is not None and b is not None and a.header != b.header:
            out.append(("~", name, f"{a.header} -> {b.header}"))
        old_rules = list(a.rules) if a else []
        new_rules = list(b.rules) if b else []
        if b is not None and a is None and b.header:
            out.append(("+", name, b.header))
        if a is not None and b is None and a.header:
            out.append(("-", name, a.header))
        out += [("-", name, r) for r in old_rules if r not in new_rules]
        out += [("+", name, r) for r in new_rules if r not in old_rules]
        if not any(c[1] == name for c in out) and old_rules != new_rules:
            out.append(("~", name, "rules reordered"))
    return out
