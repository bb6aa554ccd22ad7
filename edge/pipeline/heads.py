"""A pipeline's named heads: every linear head that reads the pipeline's embedding.

One embedding feeds N tiny heads (a keyword head, a speaker head, ...), each with its own labels
and version; :meth:`HeadSet.swap` replaces one between steps (an enrolment or a rollback beside
the running daemon), so every head of one step is scored with the heads of that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..head import Head


@dataclass(frozen=True, eq=False)
class ActiveHead:
    """A head in use: its name, arrays and version (0 = the bundle's own)."""

    name: str
    head: Head
    version: int


class HeadSet:
    """The heads of one pipeline, in manifest order."""

    def __init__(self, heads: list[ActiveHead]) -> None:
        if not heads:
            raise ValueError("a pipeline needs at least one head")
        widths = {h.head.embedding_size for h in heads}
        if len(widths) != 1:
            raise ValueError(f"heads {[h.name for h in heads]} read embeddings of different widths {sorted(widths)}")
        self._heads = {h.name: h for h in heads}

    def __iter__(self):
        return iter(self._heads.values())

    def __getitem__(self, name: str) -> ActiveHead:
        return self._heads[name]

    @classmethod
    def from_stores(cls, stores) -> "HeadSet":
        """The current version of each head in ``stores`` (head name -> its
        :class:`~edgetune.edge.head_store.HeadStore`), read once per store, so a head and the
        version it is labelled with always agree even while an enrolment promotes beside it."""
        heads = []
        for name, store in stores.items():
            version = store.current_version
            heads.append(ActiveHead(name, store.head(version), version))
        return cls(heads)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._heads)

    def versions(self) -> dict[str, int]:
        return {h.name: h.version for h in self._heads.values()}

    def swap(self, name: str, head: Head, version: int) -> ActiveHead:
        """Use ``head`` (``version``) for head ``name`` from the next step on; return the old one."""
        old = self._heads[name]
        if head.embedding_size != old.head.embedding_size:
            raise ValueError(f"head {name} v{version} is {head.embedding_size} wide; the pipeline's embeddings are "
                             f"{old.head.embedding_size}")
        self._heads[name] = ActiveHead(name, head, version)
        return old

    def run(self, embedding: np.ndarray) -> dict[str, np.ndarray]:
        """Posteriors float32 [C_h] of every head for one embedding float32 [D]."""
        return {h.name: h.head.predict_proba(embedding) for h in self._heads.values()}
