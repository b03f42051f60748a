"""topoctl's benchmark: topoctl against the rendered script, raw pyroute2 and `ip -j` reads."""
