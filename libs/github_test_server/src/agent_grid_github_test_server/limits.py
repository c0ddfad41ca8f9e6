"""Rate-limit windows per credential and resource, and the fault plan. Pure and synchronous."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

type Resource = Literal["core", "graphql"]
WINDOW_S = 3600


@dataclass
class Window:
    limit: int
    used: int
    reset: int  # epoch seconds

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


class RateLimits:
    """One window per (credential, resource); a window restarts once its reset time has passed."""

    def __init__(self, wall: Callable[[], float], *, default_limit: int = 5000) -> None:
        self._wall = wall
        self.default_limit = default_limit
        self._limits: dict[str, int] = {}
        self._windows: dict[tuple[str, Resource], Window] = {}

    def peek(self, key: str, resource: Resource) -> Window:
        now = int(self._wall())
        window = self._windows.get((key, resource))
        if window is None or window.reset <= now:
            window = Window(self._limits.get(key, self.default_limit), 0, now + WINDOW_S)
            self._windows[(key, resource)] = window
        return window

    def consume(self, key: str, resource: Resource, points: int = 1) -> Window:
        window = self.peek(key, resource)
        window.used = min(window.used + points, window.limit)
        return window

    def set_limit(self, key: str, limit: int) -> None:
        self._limits[key] = limit
        for (owner, _), window in self._windows.items():
            if owner == key:
                window.limit = limit

    def exhaust(self, key: str, resource: Resource, *, reset_in_s: int) -> Window:
        window = self.peek(key, resource)
        window.used = window.limit
        window.reset = int(self._wall()) + reset_in_s
        return window


type FaultKind = Literal["error", "secondary_rate_limit"]


@dataclass
class Fault:
    kind: FaultKind
    method: str | None  # None: any method
    path_prefix: str
    remaining: int
    status: int = 502
    retry_after_s: int = 60

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method.upper()) and path.startswith(self.path_prefix)


class Faults:
    """Injected failures, each answering the next ``count`` matching requests, oldest plan first."""

    def __init__(self) -> None:
        self._plan: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.method is not None:
            fault.method = fault.method.upper()
        self._plan.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self._plan:
            if fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._plan.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._plan.clear()
