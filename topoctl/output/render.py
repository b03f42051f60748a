"""Plan -> POSIX shell script, through jinja2. The same Plan the applier executes.

`render_build` plans against an empty machine (the script builds everything from nothing);
`render_teardown` plans the destroy of exactly what the build made.
"""

from __future__ import annotations

import shlex
from importlib import resources

import jinja2

from topoctl import __version__
from topoctl.core.actions import Plan
from topoctl.core.desired import Deployment
from topoctl.paths import NETNS_RUN_DIR, STATE_DIR, route_record_name, routes_record_dir
from topoctl.core.planner import plan
from topoctl.core.nft_text import delete_script, replace_script
from topoctl.core.state import ROUTE_PROTO, State, owner_alias, route_record_key

FLAVORS = ("ip", "brctl")


def _quote(value: object) -> str:
    return shlex.quote(str(value))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files("topoctl.output").joinpath("templates", name).read_text(encoding="utf-8")),
        autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["q"] = _quote
    return env


def render_plan(the_plan: Plan, context: Deployment, flavor: str = "ip", teardown: bool = False) -> str:
    topology = context.topology
    template = _environment().get_template("script.sh.j2")
    hosts = ", ".join(context.realisation.hosts)
    return template.render(
        plan=the_plan, flavor=flavor, teardown=teardown, version=__version__,
        source=topology.source, topology=topology.name, hosts=hosts, emulate=context.realisation.emulate,
        alias=owner_alias(topology.name), proto=ROUTE_PROTO, netns_dir=NETNS_RUN_DIR, state_dir=STATE_DIR,
        routes_dir=routes_record_dir(topology.name),
        route_record=lambda route: route_record_name(route_record_key(route)),
        shared_scope=context.shared_scope(), nft_replace=replace_script, nft_delete=delete_script,
    )


def build_plan(context: Deployment) -> Plan:
    return plan(context.desired, State(), context.topology.name)


def teardown_plan(context: Deployment) -> Plan:
    return plan(context.empty(), context.desired, context.topology.name)


def render_build(context: Deployment, flavor: str = "ip") -> str:
    return render_plan(build_plan(context), context, flavor)


def render_teardown(context: Deployment, flavor: str = "ip") -> str:
    return render_plan(teardown_plan(context), context, flavor, teardown=True)
