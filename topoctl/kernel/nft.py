"""nftables through libnftables (Debian's libnftables1), called with ctypes in the namespace
it acts on: the thread that runs a command has entered that namespace, so the library's
netlink socket is opened there. No `nft` process and no `ip netns exec` per namespace
(docs/performance.md: 0.5 ms a namespace against 5 ms for `nsenter nft`).

A table is always written whole, in one transaction (core/nft_text.replace_script); reading
lists topoctl's own tables and, for the warnings, the base chains of the others.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Callable, TypeVar

from topoctl.core.nft_text import delete_script, parse_tables, replace_script
from topoctl.core.state import NftTable, Scope, scope_label
from topoctl.errors import KernelError, PermissionDenied
from topoctl.kernel import namespaces as ns

T = TypeVar("T")

LIBRARY = "libnftables.so.1"
PACKAGE_HINT = ("install Debian's nftables package (apt-get install nftables; `make` does it): topoctl writes "
                "NAT, published ports and firewall rules through libnftables")

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_missing: str | None = None


def _library() -> ctypes.CDLL:
    """libnftables, loaded on first use (a topology without firewall state never loads it)."""
    global _lib, _missing
    with _lock:
        if _lib is None and _missing is None:
            try:
                lib = ctypes.CDLL(LIBRARY, use_errno=True)
            except OSError as err:
                _missing = str(err)
            else:
                lib.nft_ctx_new.restype = ctypes.c_void_p
                lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
                lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
                for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
                    getattr(lib, name).argtypes = [ctypes.c_void_p]
                for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
                    getattr(lib, name).restype = ctypes.c_char_p
                    getattr(lib, name).argtypes = [ctypes.c_void_p]
                lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
                lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
                _lib = lib
        if _lib is None:
            raise KernelError(f"nftables is not available: {_missing}", PACKAGE_HINT)
        return _lib


def available() -> bool:
    try:
        _library()
    except KernelError:
        return False
    return True


class NftError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


OUTPUT_HANDLE = 1 << 3  # NFT_CTX_OUTPUT_HANDLE: listings end each rule with "# handle N"


def _run_here(commands: str, flags: int = 0) -> str:
    """Run nft commands in this thread's namespace, in a context of their own (the context's
    netlink socket belongs to the namespace it was opened in)."""
    lib = _library()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise NftError("libnftables could not make a context")
    try:
        if flags:
            lib.nft_ctx_output_set_flags(ctx, flags)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        rc = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftError((lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
                           or "nft failed")
        return out
    finally:
        lib.nft_ctx_free(ctx)


def _in_scope(scope: Scope, fn: Callable[[], T]) -> T:
    results, error = ns.run_each_in_order([(scope, fn)])
    if error is not None:
        raise error
    return results[0]


def _refused(what: str, scope: Scope, err: NftError) -> KernelError:
    first = err.message.splitlines()[0] if err.message else "nft failed"
    if "Operation not permitted" in err.message:
        return PermissionDenied(f"{what} in {scope_label(scope)}: {first}", "run as root")
    return KernelError(f"{what} in {scope_label(scope)}: {first}",
                       "the kernel may lack an nf_tables module the rules need (nft_nat, nft_fib, nft_masq, "
                       "nft_ct); `nft -f` of the rendered script shows the same error")


def _foreign(chains_text: str, ours: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The other tables ("ip filter"), and their base chains on the forward hook whose policy
    is drop ("ip filter FORWARD")."""
    tables, drops = [], []
    for table in parse_tables(chains_text, None):
        if table.name == ours:
            continue
        tables.append(f"{table.family} {table.name}")
        for chain in table.chains:
            if " hook forward " in f" {chain.header} " and "policy drop;" in chain.header:
                drops.append(f"{table.family} {table.name} {chain.name}")
    return tuple(tables), tuple(drops)


def read(scopes: list[Scope], name: str, foreign_in: set[Scope]) -> tuple[dict[tuple, NftTable], dict[Scope, tuple]]:
    """topoctl's tables called `name` in each scope, and, in `foreign_in`, the other tables:
    {scope: (their names, their forward chains that drop by policy)}. Scopes that do not
    exist are left out."""
    tables: dict[tuple, NftTable] = {}
    foreign: dict[Scope, tuple] = {}

    def read_here(scope: Scope) -> tuple[list[NftTable], tuple]:
        listed = _run_here("list tables")
        families = [words[1] for words in (line.split() for line in listed.splitlines())
                    if len(words) == 3 and words[0] == "table" and words[2] == name]
        found = []
        for family in families:
            found += parse_tables(_run_here(f"list table {family} {name}"), scope)
        return found, _foreign(_run_here("list chains"), name) if scope in foreign_in else ((), ())

    def guarded(scope: Scope):
        try:
            return read_here(scope)
        except NftError as err:
            raise _refused("reading nftables tables", scope, err) from None

    steps = [(scope, (lambda scope=scope: guarded(scope))) for scope in scopes]
    existing = set(ns.list_netns())
    steps = [(scope, fn) for scope, fn in steps if scope is None or scope in existing]
    results, error = ns.run_each_in_order(steps)
    if error is not None:
        raise error
    for (scope, _), (found, others) in zip(steps, results):
        for table in found:
            tables[table.key] = table
        if others[0]:
            foreign[scope] = others
    return tables, foreign


def foreign_drops(scopes: list[Scope], ours: str) -> dict[Scope, list[tuple[str, str, str, str]]]:
    """What in other tables than `ours` may drop traffic, per scope: (table, chain, hook, what)
    for every base chain whose policy is drop ("policy drop") and every rule of a base chain
    that drops or rejects (its text). Read for `check`'s explanations, never written."""

    def read_here(scope: Scope) -> list[tuple[str, str, str, str]]:
        found = []
        for table in parse_tables(_run_here("list ruleset"), scope):
            if table.name == ours:
                continue
            for chain in table.chains:
                words = chain.header.replace(";", " ").split()
                if "hook" not in words:
                    continue
                hook = words[words.index("hook") + 1]
                where = (f"{table.family} {table.name}", chain.name, hook)
                if "policy drop" in chain.header:
                    found.append((*where, "policy drop"))
                found += [(*where, rule) for rule in chain.rules if f" {rule} ".find(" drop ") >= 0
                          or " reject" in f" {rule}"]
        return found

    existing = set(ns.list_netns())
    steps = [(scope, (lambda scope=scope: read_here(scope))) for scope in scopes
             if scope is None or scope in existing]
    results, error = ns.run_each_in_order(steps)
    if isinstance(error, NftError):
        raise _refused("reading nftables tables", steps[len(results)][0], error) from None
    if error is not None:
        raise error
    return {scope: found for (scope, _), found in zip(steps, results) if found}


def run_in_each(steps: list[tuple[Scope, str]], flags: int = 0) -> tuple[list[str], tuple[Scope, str] | None]:
    """nft commands in each namespace, in order, by one thread; stops at the first that fails:
    (the outputs of those done, (the scope, its error) or None). For trace's own tables."""
    results, error = ns.run_each_in_order([(scope, (lambda text=text: _run_here(text, flags))) for scope, text in steps])
    if error is None:
        return results, None
    failed = steps[len(results)][0]
    return results, (failed, error.message if isinstance(error, NftError) else str(error))


def write_table(table: NftTable) -> None:
    try:
        _in_scope(table.scope, lambda: _run_here(replace_script(table)))
    except NftError as err:
        raise _refused(f"writing nftables table {table.family} {table.name}", table.scope, err) from None


def delete_table(table: NftTable) -> None:
    try:
        _in_scope(table.scope, lambda: _run_here(delete_script(table.family, table.name)))
    except NftError as err:
        raise _refused(f"deleting nftables table {table.family} {table.name}", table.scope, err) from None
