# The two commands of the README: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
DEMO := topologies/docker0.yaml
TOPOCTL := $(BIN)/topoctl

.PHONY: all demo test lint unit integration bench sysdeps venv bytecode clean

all: test

# Debian packages the demo and the tests use: ping (iputils-ping), brctl (bridge-utils), ip,
# and nftables (libnftables1, which topoctl loads for NAT, ports and firewalls, and nft);
# and the benchmark's CNI peer (bench/cni.py): the reference plugins, and iptables, which their
# portmap and ipMasq run (Debian's is the nf_tables one); Graphviz, for `topoctl graph --format svg`.
sysdeps:
	@missing=""; \
	command -v ping >/dev/null || missing="$$missing iputils-ping"; \
	command -v brctl >/dev/null || missing="$$missing bridge-utils"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v nft >/dev/null || missing="$$missing nftables"; \
	test -x /usr/lib/cni/bridge || missing="$$missing containernetworking-plugins"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	command -v dot >/dev/null || missing="$$missing graphviz"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP):
	@if ! $(PYTHON) -m venv $(VENV) 2>/dev/null; then \
	  echo "python venv module missing; installing python3-venv"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); \
	fi
	@# compat: a plain path in a .pth file; the default editable finder costs every command ~20 ms
	@# [test]: pytest, hypothesis, import-linter, pyroute2 (the oracle); [bench]: pyroute2 (bench/floor.py)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,bench]' --config-settings editable_mode=compat
	@rm -f $(VENV)/.installed-*; touch $@

# Byte-compile the package, as a regular pip install does: an editable install never writes
# .pyc files when PYTHONDONTWRITEBYTECODE is set, and compiling on each run costs ~40 ms.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q topoctl bench

venv: $(STAMP) bytecode

# Fetches a URL (retrying while the demo's server starts) and says what answered.
# (Python source with \n escapes, run through exec().)
export DEMO_FETCH := import sys, time, urllib.request\nfor _ in range(50):\n    try:\n        r = urllib.request.urlopen(sys.argv[1], timeout=2); print(sys.argv[1], '->', r.status, r.reason); break\n    except OSError:\n        time.sleep(0.1)\nelse:\n    sys.exit('no answer from ' + sys.argv[1])

# A one-shot TCP server that tells each client the address it came from, and its client.
export DEMO_SERVE := import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('192.0.2.1', 8000)); s.listen(1); s.settimeout(20)\nc, peer = s.accept(); c.sendall(('you came from ' + peer[0]).encode()); c.close()
export DEMO_ASK := import socket, time\nfor _ in range(50):\n    try:\n        c = socket.create_connection(('192.0.2.1', 8000), timeout=2); print('192.0.2.1:8000 says:', c.recv(64).decode()); break\n    except OSError:\n        time.sleep(0.1)\nelse:\n    raise SystemExit('no answer from 192.0.2.1:8000')

# Build the classic docker0 example in an emulated host, show the plan, apply it, prove the
# containers reach each other, the host and the outside, and a published port answers; show the
# script, check every path the design implies, destroy it.
demo: $(STAMP) bytecode sysdeps
	@set -euo pipefail; \
	trap '$(TOPOCTL) destroy --emulate $(DEMO) >/dev/null 2>&1 || true' EXIT; \
	$(TOPOCTL) destroy --emulate $(DEMO) >/dev/null; \
	echo "== topoctl validate $(DEMO)"; $(TOPOCTL) validate $(DEMO); \
	echo; echo "== topoctl plan --emulate $(DEMO)"; $(TOPOCTL) plan --emulate $(DEMO); \
	echo; echo "== topoctl apply --emulate $(DEMO)"; $(TOPOCTL) apply --emulate $(DEMO); \
	echo; echo "== topoctl show --emulate $(DEMO)"; $(TOPOCTL) show --emulate $(DEMO); \
	echo; echo "== nginx-1 (172.17.0.2) pings nginx-2 (172.17.0.3) across docker0"; \
	$(TOPOCTL) exec --emulate $(DEMO) nginx-1 -- ping -c 2 -W 2 172.17.0.3; \
	echo; echo "== the host itself (namespace docker0-local) pings nginx-1"; \
	$(TOPOCTL) exec --emulate $(DEMO) local -- ping -c 1 -W 2 172.17.0.2; \
	echo; echo "== nginx-1 reaches the outside: the host's gateway 192.0.2.1, which the emulated underlay answers"; \
	$(TOPOCTL) exec --emulate $(DEMO) nginx-1 -- ping -c 2 -W 2 192.0.2.1; \
	echo; echo "== ... masqueraded: a server at the gateway sees nginx-1's connection come from the host's 192.0.2.2"; \
	$(TOPOCTL) exec --emulate $(DEMO) underlay -- $(PYTHON) -c "exec(\"$$DEMO_SERVE\")" & \
	server=$$!; \
	$(TOPOCTL) exec --emulate $(DEMO) nginx-1 -- $(PYTHON) -c "exec(\"$$DEMO_ASK\")"; \
	wait $$server; \
	echo; echo "== a web server in nginx-1 on port 80 answers on the host's published port 8080"; \
	$(TOPOCTL) exec --emulate $(DEMO) nginx-1 -- timeout 20 $(PYTHON) -m http.server 80 --bind 0.0.0.0 >/dev/null 2>&1 & \
	server=$$!; \
	$(TOPOCTL) exec --emulate $(DEMO) local -- $(PYTHON) -c "exec(\"$$DEMO_FETCH\")" http://127.0.0.1:8080/; \
	$(TOPOCTL) exec --emulate $(DEMO) nginx-2 -- $(PYTHON) -c "exec(\"$$DEMO_FETCH\")" http://172.17.0.1:8080/; \
	kill $$server 2>/dev/null; wait $$server 2>/dev/null || true; \
	echo; echo "== a second apply changes nothing"; $(TOPOCTL) apply --emulate $(DEMO); \
	echo; echo "== topoctl render $(DEMO)  (the script for a real host, from an empty one: what the emulated run built, less the emulated host and underlay)"; $(TOPOCTL) render $(DEMO); \
	echo; echo "== topoctl check --emulate $(DEMO)  (every path the design implies, probed from inside the namespaces)"; \
	$(TOPOCTL) check --emulate $(DEMO); \
	echo; echo "== topoctl destroy --emulate $(DEMO)"; $(TOPOCTL) destroy --emulate $(DEMO); \
	trap - EXIT; echo; echo "demo complete: nothing of it is left (ip netns list is empty of it)"

# The layering of docs/architecture.md: the contracts under [tool.importlinter] in pyproject.toml.
lint: $(STAMP)
	$(BIN)/lint-imports

test: $(STAMP) bytecode sysdeps lint
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

unit: $(STAMP) bytecode
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

integration: $(STAMP) bytecode sysdeps
	$(BIN)/python -m pytest -q -ra tests/integration $(PYTEST_ARGS)

# topoctl against the rendered script, raw pyroute2 and `ip -j` reads (docs/performance.md).
# BENCH_ARGS="--large" adds N=1000 (a few minutes).
bench: $(STAMP) bytecode sysdeps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .import_linter_cache
