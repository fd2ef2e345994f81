"""One component's worker: its state, the action it runs, what waits, and the moves between."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from glyph_guard.common.config import Component
from glyph_guard.remediator.actions.base import Started
from glyph_guard.remediator.intake import ComponentView, Key
from glyph_guard.remediator.policy import ComponentState, Origin
from glyph_guard.remediator.store import DecisionRow

ACTION_ORDER = ("restart", "clean_cache")  # a restart waiting goes before cleaning


class Conflict(Exception):
    """An operator request that cannot be honoured now (the message says why)."""


@dataclass(frozen=True)
class Trigger:
    """Why an action is wanted: the decision row to record, from whom, and since when."""

    origin: Origin
    row: DecisionRow
    failed_at: float  # when the failure that asks began (monotonic)
    retry_of: int | None = None  # the failed action a retry repeats
    recheck: bool = False  # when its turn comes, act only if the component is still unhealthy

    @property
    def key(self) -> Key:
        return self.row.fingerprint or "", self.row.starts_at or ""


@dataclass(frozen=True)
class Running:
    """The action in flight."""

    action: str
    action_id: int | None  # None while only checking whether the component recovered
    trigger: Trigger
    started_at: float  # monotonic


class Worker:
    """A component's state and single-flight slot; every change goes through a method here."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self.state = ComponentState()
        self.started: Started | None = None
        self.running: Running | None = None
        self.wanted: dict[str, Trigger] = {}
        self.last_action_at: float | None = None  # wall clock, for the gauge
        self.wake = asyncio.Event()

    @property
    def name(self) -> str:
        return self.component.name

    @property
    def busy(self) -> str | None:
        return self.running.action if self.running else None

    def view(self) -> ComponentView:
        return ComponentView(
            self.component,
            self.state,
            self.busy,
            self.running.action_id if self.running else None,
            {action: trigger.key for action, trigger in self.wanted.items()},
        )

    def launch(self, action: str, trigger: Trigger, action_id: int | None, now: float) -> Running:
        """Take the single-flight slot (an action, or a recovery check when action_id is None)."""
        if self.running is not None:
            raise Conflict(
                f"a {self.running.action} of {self.name} is running"
                f" (action {self.running.action_id})"
            )
        self.wanted.pop(action, None)
        self.running = Running(action, action_id, trigger, now)
        return self.running

    def finish(self, state: ComponentState | None = None, at: float | None = None) -> None:
        """Free the slot, whatever happened, and look at what waits."""
        self.running = None
        if state is not None:
            self.state = state
        if at is not None:
            self.last_action_at = at
        self.wake.set()

    def wait(self, action: str, trigger: Trigger) -> None:
        """Queue an action for its turn; an action already waiting keeps its first trigger."""
        self.wanted.setdefault(action, trigger)
        self.wake.set()

    def drop(self, actions: tuple[str, ...] | list[str]) -> list[str]:
        """Withdraw waiting actions; those that were waiting."""
        return [a for a in actions if self.wanted.pop(a, None) is not None]

    def next_wanted(self) -> tuple[str, Trigger] | None:
        """The waiting action whose turn is next, when the slot is free."""
        if self.running is not None:
            return None
        action = next((a for a in ACTION_ORDER if a in self.wanted), None)
        return None if action is None else (action, self.wanted[action])
