"""One component's lane: its state, the action it runs, what waits; the only code changing them."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from glyph_guard.common.config import Budget, Component
from glyph_guard.remediator import policy
from glyph_guard.remediator.actions.base import Started
from glyph_guard.remediator.intake import ComponentView, Key
from glyph_guard.remediator.metrics import ComponentGauges
from glyph_guard.remediator.models import ComponentStatus
from glyph_guard.remediator.policy import ComponentState, Origin
from glyph_guard.remediator.store.records import DecisionRow

# a GPU reset waiting goes before a restart (which it may let succeed), a restart before cleaning
ACTION_ORDER = ("reset_gpu", "restart", "clean_cache")


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
    idle_until: float | None = None  # planned: waits for an idle engine until then (monotonic)
    about_health: bool = False  # the alert is about health: healthy now clears it (incarnation)

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


class Lane:
    """A component's state and single-flight slot; every change goes through a method here."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self.state = ComponentState()
        self.started: Started | None = None  # what the last restart started (swept next time)
        self.running: Running | None = None
        self.wanted: dict[str, Trigger] = {}
        self.last_action_at: float | None = None  # wall clock, for the gauge
        self._wake = asyncio.Event()

    @property
    def name(self) -> str:
        return self.component.name

    def set_component(self, component: Component) -> None:
        """The component as a reloaded config describes it (the same name)."""
        assert component.name == self.name
        self.component = component

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
            frozenset(a for a, t in self.wanted.items() if t.idle_until is not None),
        )

    def restore(
        self,
        state: ComponentState,
        started: Started | None,
        last_action_at: float | None,
        wanted: dict[str, Trigger],
    ) -> None:
        """Take up what an earlier run left (at start, before anything runs)."""
        self.state, self.started, self.last_action_at = state, started, last_action_at
        self.wanted = dict(wanted)

    def set_state(self, state: ComponentState, *, wake: bool = False) -> None:
        self.state = state
        if wake:
            self._wake.set()

    def set_started(self, started: Started | None) -> None:
        self.started = started

    def launch(self, action: str, trigger: Trigger, action_id: int | None, now: float) -> Running:
        """Take the single-flight slot (an action, or a recovery check when action_id is None)."""
        if self.running is not None:
            raise Conflict(
                f"a {self.running.action} of {self.name} is running"
                f" (action {self.running.action_id})"
            )
        if action_id is not None:  # a recovery check leaves the action wanted
            self.wanted.pop(action, None)
        self.running = Running(action, action_id, trigger, now)
        return self.running

    def finish(self, running: Running) -> None:
        """Free the slot (if the action still holds it) and look at what waits."""
        if self.running is running:
            self.running = None
        self._wake.set()

    def ended(  # noqa: PLR0917 (how it ended, and when)
        self,
        running: Running,
        ending: policy.Ending,
        started: Started | None,
        budget: Budget,
        now: float,
        at: float,
    ) -> None:
        """An action ended (now: monotonic, at: wall clock); a restart's follows by the policy."""
        if running.action == "restart":
            self.started = started
            self.state = policy.after_restart(
                self.state,
                budget,
                failed_at=running.trigger.failed_at,
                started=running.started_at,
                finished=now,
                ending=ending,
                origin=running.trigger.origin,
            )
        self.last_action_at = at
        self.finish(running)

    def wait(self, action: str, trigger: Trigger) -> bool:
        """Queue an action for its turn; False: one already waits (it keeps its first trigger,
        unless that one waits for an idle engine and this one does not)."""
        self._wake.set()
        waiting = self.wanted.get(action)
        if waiting is not None and waiting.idle_until is not None and trigger.idle_until is None:
            self.wanted[action] = trigger
            return True
        return self.wanted.setdefault(action, trigger) is trigger

    def restate(self, action: str, trigger: Trigger) -> None:
        """The waiting action's trigger as it now stands (the same request, recorded anew)."""
        if action in self.wanted:
            self.wanted[action] = trigger

    def drop(self, actions: tuple[str, ...] | list[str]) -> list[str]:
        """Withdraw waiting actions; those that were waiting."""
        return [a for a in actions if self.wanted.pop(a, None) is not None]

    def next_wanted(self) -> tuple[str, Trigger] | None:
        """The waiting action whose turn is next, when the slot is free."""
        if self.running is not None:
            return None
        action = next((a for a in ACTION_ORDER if a in self.wanted), None)
        return None if action is None else (action, self.wanted[action])

    async def woken(self, timeout: float | None) -> None:
        """Sleep until something changed or the timeout passed."""
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def status(self, budget: Budget, now: float, dry_run: bool) -> ComponentStatus:
        """As operators see it."""
        return ComponentStatus(
            component=self.name,
            paused=self.state.paused,
            gave_up=self.state.gave_up,
            budget_remaining=policy.budget_remaining(self.state, budget, now),
            busy=self.busy,
            waiting=list(self.wanted),
            dry_run=dry_run,
        )

    def gauges(self, budget: Budget, now: float) -> ComponentGauges:
        """As a scrape sees it."""
        return ComponentGauges(
            component=self.name,
            budget_remaining=policy.budget_remaining(self.state, budget, now),
            failed_restarts=policy.current_failures(self.state, budget, now),
            gave_up=self.state.gave_up,
            paused=self.state.paused,
            busy=self.busy is not None,
            last_action_timestamp=self.last_action_at,
        )
