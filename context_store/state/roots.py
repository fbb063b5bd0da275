"""Which source holds a path: the deepest configured root that contains it.

Sources may nest: a staff-answer folder inside the help-centre folder, a user export
inside a company tree. A file belongs to exactly one source, the one whose root is deepest
among those containing it, whoever asks: the watcher journaling an event, a sync
versioning files, the learning loop naming a staff answer's document. Asking anywhere else
("every root that contains it", "the first one configured") would version one file as two
documents, or index a staff answer under a document id nobody versioned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from context_store.settings import Settings, SourceConfig
from context_store.state.sources import SourceFile, list_source_files

__all__ = ["SourceRoot", "SourceRoots", "source_for"]


@dataclass(frozen=True)
class SourceRoot:
    state_kind: str  # company | user
    source: SourceConfig
    root: Path  # resolved

    def contains(self, resolved: Path) -> bool:
        return resolved == self.root or self.root in resolved.parents

    def rel_path(self, path: str | Path) -> str:
        """``path`` relative to this root, as the document id and ``rel_path`` columns write it."""
        return Path(path).resolve().relative_to(self.root).as_posix()


class SourceRoots:
    """Every configured source root, deepest first."""

    def __init__(self, company: Sequence[SourceConfig], user: Sequence[SourceConfig]) -> None:
        roots = [SourceRoot("company", s, Path(s.path).resolve()) for s in company]
        roots += [SourceRoot("user", s, Path(s.path).resolve()) for s in user]
        # deepest first; among equally deep roots the configured order decides (company first)
        self._roots = sorted(roots, key=lambda r: len(r.root.parts), reverse=True)

    @classmethod
    def of(cls, settings: Settings) -> SourceRoots:
        return cls(settings.company_sources, settings.user_sources)

    def holder(self, path: str | Path) -> SourceRoot | None:
        """The source holding ``path`` (``None``: no configured source does)."""
        return self._holder(Path(path).resolve())

    def _holder(self, resolved: Path) -> SourceRoot | None:
        return next((r for r in self._roots if r.contains(resolved)), None)

    def holds(self, state_kind: str, source: SourceConfig, path: str | Path) -> bool:
        held = self.holder(path)
        return held is not None and (held.state_kind, held.source.name) == (state_kind, source.name)

    def owned(self, state_kind: str, source: SourceConfig, resolved: Iterable[Path]) -> set[Path]:
        """The paths (already resolved) among ``resolved`` that ``source`` holds."""
        out = set()
        for path in resolved:
            held = self._holder(path)
            if held is not None and (held.state_kind, held.source.name) == (state_kind, source.name):
                out.add(path)
        return out

    def list_files(self, state_kind: str, source: SourceConfig, only: set[Path] | None) -> list[SourceFile]:
        """The files a sync of ``source`` versions: its ``list_source_files`` less those a nested source holds.

        ``only`` must already be ``owned`` paths. A full walk is filtered only when another
        root lies inside this one, so sources that do not nest pay nothing.
        """
        files = list_source_files(source, only=only)
        if only is None and self._has_nested(state_kind, source):
            files = [f for f in files if self.holds(state_kind, source, f.path)]
        return files

    def _has_nested(self, state_kind: str, source: SourceConfig) -> bool:
        mine = next((r for r in self._roots if (r.state_kind, r.source.name) == (state_kind, source.name)), None)
        return mine is not None and any(r is not mine and mine.contains(r.root) for r in self._roots)


def source_for(settings: Settings, path: str | Path) -> SourceRoot | None:
    """Which kind of state and which configured source ``path`` belongs to (``None``: neither)."""
    return SourceRoots.of(settings).holder(path)
