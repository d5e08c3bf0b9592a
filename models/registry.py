"""Name → object lookup used wherever a string enters the library (house style 6)."""
from __future__ import annotations

from typing import Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0])


class Registry(Generic[T], Mapping[str, T]):
    """A mapping whose failed lookups name the bad key and every valid one; entries are added, never replaced."""

    def __init__(self, kind: str, entries: Mapping[str, T]):
        self.kind = kind
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}") from None

    def add(self, name: str, entry: T) -> T:
        """Register one more entry (a new metric, loader, ...); a name already taken is refused."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
