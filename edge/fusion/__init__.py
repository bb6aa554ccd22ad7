"""Fused heads on the device: heads that read several modalities' embeddings side by side.

``concat`` heads are plain linear heads (:class:`~edgetune.edge.head.Head`); ``gated`` heads
weigh each modality per sample first (:class:`.gated.GatedHead`). :func:`load_fused_head` builds
either from a head file's arrays and the manifest's ``HeadSpec.fusion``. NumPy only.
"""

from __future__ import annotations

from .gated import FUSIONS, GatedHead, load_fused_head

__all__ = ["FUSIONS", "GatedHead", "load_fused_head"]
