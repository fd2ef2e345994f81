"""What a SIGHUP applies to a running service, and what only a restart applies."""

from __future__ import annotations

from typing import Literal

from glyph_guard.common.config import Deployment

Service = Literal["exporter", "remediator"]


def reloaded(
    running: Deployment, new: Deployment, service: Service
) -> tuple[Deployment, list[str]]:
    """The config to run after a reload, and the changed settings it kept as they run.

    The exporter rebuilds its samplers, so everything but its listen address applies. The
    remediator applies its components (matchers, probes, restart methods, actions) and its
    budget; the rest of its section (sockets, store, secrets, logs) and its set of components
    (each has a lane and records) wait for a restart.
    """
    now, wanted = getattr(running, service), getattr(new, service)
    applies = {"exporter": set(type(now).model_fields) - {"listen"}, "remediator": {"budget"}}
    fixed = [f for f in type(now).model_fields if f not in applies[service]]
    kept = [f"{service}.{f}" for f in fixed if getattr(now, f) != getattr(wanted, f)]
    update: dict[str, object] = {
        service: wanted.model_copy(update={f: getattr(now, f) for f in fixed})
    }
    if service == "remediator":
        if [c.name for c in running.components] != [c.name for c in new.components]:
            kept.append("the set of components")
        given = {c.name: c for c in new.components}
        update["components"] = [given.get(c.name, c) for c in running.components]
    return new.model_copy(update=update), kept
