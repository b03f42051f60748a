"""Timing of topoctl.kernel.tc over N throwaway namespaces (as root): set_tbf() once per
namespace (a thread, a socket, a lookup and a request each), read_tbf() of all of them (one
thread, two dumps per namespace), and the same requests on sockets opened beforehand, as an
executor holding one per namespace (sockets.Kernel) would send them. The figures are in
TC_NOTES.md.

    python -m bench.tc_timing [N] [--repeat R]

Namespaces are named tct-<random>-<i>, a veth between each pair of them, and all are deleted
at the end whatever happens.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import tempfile
import time


def _ip_batch(lines: list[str], check: bool = True) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".ip") as batch:
        batch.write("\n".join(lines) + "\n")
        batch.flush()
        subprocess.run(["ip", "-force", "-batch", batch.name], check=check, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.n + args.n % 2
    uid = secrets.token_hex(3)
    names = [f"tct-{uid}-{i}" for i in range(n)]
    try:
        _ip_batch([f"netns add {name}" for name in names])
        for i in range(0, n, 2):  # `ip -batch` takes no -n per line
            subprocess.run(["ip", "-n", names[i], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                            "netns", names[i + 1]], check=True)
            for j in (i, i + 1):
                subprocess.run(["ip", "-n", names[j], "link", "set", "eth0", "up"], check=True)

        started = time.perf_counter()
        from topoctl.kernel import namespaces as ns
        from topoctl.kernel import tc
        from topoctl.kernel.rtnl import Rtnl

        tc.tbf_options(10_000_000, 32768, 95268)  # the first use imports pyroute2
        print(f"imports of topoctl.kernel.tc and pyroute2's tbf classes: {time.perf_counter() - started:.3f} s")

        wanted = {name: ["eth0"] for name in names}
        for attempt in range(args.repeat):
            rate = 10_000_000 + attempt * 8_000
            t0 = time.perf_counter()
            for name in names:
                tc.set_tbf(name, "eth0", rate, 32768)
            t1 = time.perf_counter()
            found = tc.read_tbf(wanted)
            t2 = time.perf_counter()
            assert all(value == tc.tbf_for(rate, 32768) for value in found.values()) and len(found) == n
            for name in names:
                tc.clear_root_qdisc(name, "eth0")
            t3 = time.perf_counter()
            empty = tc.read_tbf(wanted)
            t4 = time.perf_counter()
            assert all(value is None for value in empty.values())
            print(f"N={n}: set_tbf {1000 * (t1 - t0) / n:.3f} ms each ({t1 - t0:.3f} s), "
                  f"read_tbf {1000 * (t2 - t1) / n:.3f} ms per namespace ({t2 - t1:.3f} s), "
                  f"clear_root_qdisc {1000 * (t3 - t2) / n:.3f} ms each, read of none {t4 - t3:.3f} s")

        # on sockets opened beforehand (one thread for all), as an executor would hold them
        opened = ns.run_in_each(names, lambda name: Rtnl.open())
        try:
            index = {name: handle.link_index("eth0") for name, handle in opened.items()}
            for attempt in range(args.repeat):
                t0 = time.perf_counter()
                for name, handle in opened.items():
                    tc.replace_tbf(handle, index[name], 10_000_000, 32768, 95268)
                t1 = time.perf_counter()
                roots = {name: tc.root_qdiscs(handle) for name, handle in opened.items()}
                t2 = time.perf_counter()
                for name, handle in opened.items():
                    tc.delete_root_qdisc(handle, index[name])
                t3 = time.perf_counter()
                assert all(len(found) == 1 for found in roots.values())
                print(f"N={n} on open sockets: replace_tbf {1000 * (t1 - t0) / n:.3f} ms each, "
                      f"root_qdiscs {1000 * (t2 - t1) / n:.3f} ms each, delete_root_qdisc {1000 * (t3 - t2) / n:.3f} ms each")
        finally:
            for handle in opened.values():
                handle.close()
    finally:
        _ip_batch([f"netns del {name}" for name in names], check=False)
        left = [line for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
                if uid in line]
        print("left behind:", left or "nothing")


if __name__ == "__main__":
    main()
