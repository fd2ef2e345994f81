"""Human-readable text for the operator commands (pure: the API's answers in, lines out)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "30m", "2h", "1d" or "1h30m"; ValueError otherwise."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    elif value and DURATION.sub("", value) == "":
        seconds = sum(float(n) * UNITS[u] for n, u in DURATION.findall(value))
    else:
        raise ValueError(f"expected a duration such as 90s, 30m, 2h or 1h30m, got {text!r}")
    if seconds <= 0:
        raise ValueError(f"expected a duration above zero, got {text!r}")
    return seconds


def clock(at: float | None) -> str:
    """A wall-clock time in the local zone ("-" for none)."""
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s" if value < 10 and value != int(value) else f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def state_of(report: Mapping[str, Any]) -> str:
    """Paused (until when, why), gave up, or active; and dry-run."""
    parts = []
    if report["paused"]:
        until = report.get("paused_until")
        text = "paused" if until is None else f"paused until {clock(until)}"
        if report.get("pause_reason"):
            text += f" ({report['pause_reason']})"
        parts.append(text)
    if report["gave_up"]:
        parts.append("gave up")
    if not parts:
        parts.append("active")
    if report["dry_run"]:
        parts.append("dry-run")
    return ", ".join(parts)


def waiting_of(report: Mapping[str, Any]) -> str:
    items = []
    for wait in report.get("waiting_for", ()):
        until = "" if wait["until"] is None else f" until {clock(wait['until'])}"
        items.append(f"{wait['action']} ({wait['reason']}{until})")
    return ", ".join(items) or "-"


def last_action_of(report: Mapping[str, Any]) -> str:
    action = report.get("last_action")
    if not action:
        return "-"
    outcome = action["outcome"] or "running"
    when = clock(action["finished_at"] or action["started_at"])
    return f"{action['action']} #{action['id']} {outcome} at {when} ({action['origin']})"


STATUS_COLUMNS = (
    *("COMPONENT", "HEALTH", "STATE", "BUSY", "BUDGET"),
    *("BACKOFF", "NEXT RESTART", "WAITING", "LAST ACTION"),
)


def status_rows(reports: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            r["component"],
            r.get("health") or "-",
            state_of(r),
            r["busy"] or "-",
            f"{r['budget_remaining']} left",
            seconds(r.get("backoff_seconds") or None),
            clock(r.get("next_restart_at")),
            waiting_of(r),
            last_action_of(r),
        )
        for r in reports
    ]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines) + "\n"


def status(reports: Sequence[Mapping[str, Any]]) -> str:
    """One line per component."""
    return table(STATUS_COLUMNS, status_rows(reports))


def switched(command: str, report: Mapping[str, Any]) -> str:
    return f"{report['component']}: {command} done; now {state_of(report)}\n"


def decision_line(decision: Mapping[str, Any]) -> str:
    """One decision: when, what asked, the verdict and its reason."""
    asked = (
        f"alert {decision['alert_status']}" if decision["origin"] == "alert" else decision["origin"]
    )
    what = f" {decision['action']}" if decision["action"] else ""
    text = f"{clock(decision['at'])}  {asked}{what} -> {decision['verdict']}: {decision['reason']}"
    if decision["action_id"] is not None:
        text += f" (action {decision['action_id']})"
    if decision["detail"]:
        text += f" - {decision['detail']}"
    return text


def action_line(action: Mapping[str, Any]) -> str:
    """One action and how it was verified."""
    head = f"{clock(action['started_at'])}  action {action['id']} {action['action']}"
    if action["outcome"] is None:
        return f"{head} ({action['origin']}): still running"
    took = seconds(action["duration_seconds"])
    return f"{head} ({action['origin']}): {action['outcome']} in {took} - {action['reason']}"


def incident(block: Mapping[str, Any]) -> str:
    """One incident: what asked, then every decision and action it led to."""
    if block["fingerprint"]:
        title = f"{block['alertname'] or 'alert'} on {block['component'] or '?'}"
        title += f" (alert {block['fingerprint']}, firing since {block['starts_at']})"
    else:
        first = block["decisions"][0]
        title = f"{block['origin']} {first['action'] or ''} on {block['component'] or '?'}"
    lines = [f"== {clock(block['first_at'])}  {title}"]
    lines += [f"   {decision_line(d)}" for d in block["decisions"]]
    lines += [f"   {action_line(a)}" for a in block["actions"]]
    return "\n".join(lines) + "\n"


def history(blocks: Sequence[Mapping[str, Any]]) -> str:
    if not blocks:
        return "nothing on record in that span\n"
    return "\n".join(incident(b) for b in blocks)


def explanation(found: Mapping[str, Any]) -> str:
    lines = [f"{found['component']}: {found['why']}"]
    lines += [f"   {decision_line(d)}" for d in found["last_alert"]]
    if found["action"]:
        lines.append(f"   {action_line(found['action'])}")
    lines.append(f"next: {found['next']}")
    return "\n".join(lines) + "\n"


def restart(answer: Mapping[str, Any], action: Mapping[str, Any] | None) -> str:
    if answer["verdict"] != "acted":
        return f"{answer['component']}: restart not started: {answer['reason']}\n"
    text = f"{answer['component']}: restart started (action {answer['action_id']})\n"
    if action is not None:
        text += action_line(action) + "\n"
    return text
