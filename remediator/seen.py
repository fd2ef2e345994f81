"""Which alerts were judged before: a bounded memory in front of the store's record of them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from glyph_guard.remediator.intake import Key

SEEN_IN_MEMORY = 50_000  # recent alerts remembered here too, so dedup holds while the store fails


class SeenAlerts:
    """Alerts (fingerprint, startsAt) judged before, less those an earlier run left unfinished."""

    def __init__(self, limit: int = SEEN_IN_MEMORY) -> None:
        self._limit = limit
        self._recent: OrderedDict[Key, None] = OrderedDict()
        self._reopened: set[Key] = set()  # judged, but their action was never finished

    def reopen(self, keys: Iterable[Key]) -> None:
        self._reopened.update(keys)

    def settle(self, key: Key) -> None:
        """An alert's action was started or dropped: a repeat of it is a duplicate again."""
        self._reopened.discard(key)

    def unknown(self, keys: Iterable[Key]) -> list[Key]:
        """Those not in memory (the store may know them)."""
        return [k for k in dict.fromkeys(keys) if k not in self._recent]

    def seen(self, key: Key, stored: set[Key]) -> bool:
        return (key in self._recent or key in stored) and key not in self._reopened

    def remember(self, key: Key) -> None:
        self._recent[key] = None
        self._recent.move_to_end(key)
        while len(self._recent) > self._limit:
            self._recent.popitem(last=False)
