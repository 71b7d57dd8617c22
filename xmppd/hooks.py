"""Priority-ordered event hooks: the one way modules see stanzas and server events.

Handlers run from the highest priority down; the first that returns True stops the
event (it has been handled). Default behaviour (e.g. delivery) sits at priority -1 so that
blocking, carbons and the archive see a stanza first. A handler may be a plain function or a
coroutine function: most are plain, and firing them costs no task switch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[Any], "Awaitable[bool | None] | bool | None"]


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    handler: Handler
    priority: int


class Hooks:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Registration]] = {}

    def on(self, name: str, handler: Handler, priority: int = 0) -> Registration:
        registration = Registration(name, handler, priority)
        handlers = [*self._handlers.get(name, ()), registration]
        # Stable sort: equal priorities run in registration order.
        handlers.sort(key=lambda r: -r.priority)
        self._handlers[name] = handlers
        return registration

    def off(self, registration: Registration) -> None:
        handlers = [r for r in self._handlers.get(registration.name, ()) if r is not registration]
        if handlers:
            self._handlers[registration.name] = handlers
        else:
            self._handlers.pop(registration.name, None)

    async def fire(self, name: str, event: object) -> bool:
        """Run the handlers of `name`; True once one of them handled the event."""
        # Iterate over a snapshot: a handler may (un)register others while we run.
        for registration in self._handlers.get(name, ()):
            result = registration.handler(event)
            # A plain handler returns a bool or None; anything else is its coroutine. (Cheaper
            # than inspect.isawaitable, which this loop would call for every handler.)
            if result is not None and result.__class__ is not bool:
                result = await result  # type: ignore[misc]
            if result:
                return True
        return False
