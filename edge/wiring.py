"""The daemon, wired once from its config: bundle, head stores, pipelines, sinks, telemetry.

:class:`Device` is what ``edgetune edge run`` and ``edgetune demo`` both run::

    device = Device.from_config(config)          # verifies the bundle, opens source and models
    with device:
        summaries = device.run()                 # until the source ends or device.stop()

It builds one pipeline per configured source (today the ``[audio]`` source; a camera brings its
own source, preprocessor and postprocessor and joins here), the named heads of that modality
from their versioned stores, and the sinks: extra sinks given by the caller, then telemetry when
``[mqtt] host`` is set. While running, it looks for head versions that changed beside it (an
``edge enroll`` or ``edge heads --rollback``) and swaps them in, and tells the server in the
retained status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from edgetune.contract import ContractError

from .audio.detect import DetectorSettings
from .bundle import Bundle, load_bundle
from .config import DaemonConfig
from .head import Head
from .head_store import HeadStore
from .pipeline.heads import ActiveHead, HeadSet
from .pipeline.loop import LoopSettings, RunSummary, run_pipeline
from .pipeline.stages import Pipeline
from .runtime.providers import ProviderSettings
from .sinks import FanoutSink, Sink
from .state import resolve_state_dir

log = logging.getLogger(__name__)


def provider_settings(config: DaemonConfig) -> ProviderSettings:
    rt = config.runtime
    return ProviderSettings(providers=rt.providers, require_accelerator=rt.require_accelerator,
                            intra_op_threads=rt.intra_op_threads)


def head_stores(bundle: Bundle, state_dir: Path, input_: str) -> dict[str, HeadStore]:
    """The versioned store of every head of ``bundle`` that reads ``input_``."""
    return {h.name: HeadStore(bundle, state_dir, h.name) for h in bundle.manifest.heads_on(input_)}


@dataclass
class _Watched:
    """A pipeline and the stores of its heads, with the versions last seen."""

    pipeline: Pipeline
    stores: dict[str, HeadStore]
    seen: dict[str, int] = field(default_factory=dict)


class Device:
    """The device daemon: pipelines built from ``config``, reporting to ``sinks`` and telemetry."""

    def __init__(self, config: DaemonConfig, *, raw_rate_hz: int | None = None, sinks: Sequence[Sink] = (),
                 models=None) -> None:
        from .audio.models import AudioModels
        from .audio.pipeline import audio_pipeline
        from .audio.sources import open_source

        self.config = config
        self.state_dir = resolve_state_dir(config.state_dir)
        self.bundle = load_bundle(config.bundle, state_dir=self.state_dir)
        manifest = self.bundle.manifest
        if manifest.audio is None:
            raise ContractError(f"bundle {self.bundle.bundle_id} has modalities {list(manifest.modalities)}; this "
                                "device runs audio pipelines (a camera pipeline comes with the image path)")
        stores = head_stores(self.bundle, self.state_dir, "audio")
        if not stores:
            raise ContractError(f"bundle {self.bundle.bundle_id} has no head on the audio embedding; heads are "
                                f"{[(h.name, h.input) for h in manifest.heads]}")
        # The source first: a wrong URI is reported before the models load.
        source = open_source(config.audio.source, manifest.audio.sample_rate_hz, raw_rate_hz=raw_rate_hz)
        self.models = models if models is not None else AudioModels(self.bundle, provider_settings(config),
                                                                     state_dir=self.state_dir)
        heads = HeadSet([ActiveHead(name, s.head(s.current_version), s.current_version) for name, s in stores.items()])
        a = config.audio
        detector = DetectorSettings(threshold=a.threshold, smoothing_hops=a.smoothing_hops,
                                    refractory_s=None if a.refractory_ms is None else a.refractory_ms / 1000.0)
        pipeline = audio_pipeline(self.bundle, self.models, source, heads, hop_ms=a.hop_ms, detector=detector)
        self._watched = [_Watched(pipeline, stores, heads.versions())]
        self.telemetry = None
        if config.mqtt.enabled:
            from .telemetry.publisher import Telemetry

            self.telemetry = Telemetry.from_config(config, state_dir=self.state_dir, status_extra=self._status())
        self.sinks = list(sinks)
        if self.telemetry is not None:
            from .telemetry.sink import TelemetrySink

            self.sinks.append(TelemetrySink(self.telemetry))

    @classmethod
    def from_config(cls, config: DaemonConfig, **kwargs) -> "Device":
        return cls(config, **kwargs)

    @property
    def pipelines(self) -> list[Pipeline]:
        return [w.pipeline for w in self._watched]

    def _status(self) -> dict:
        first = self.pipelines[0]
        return {"bundle_id": self.bundle.bundle_id, "bundle_version": self.bundle.bundle_version,
                "head_version": next(iter(first.heads.versions().values())), "provider": first.provider,
                "pipelines": [p.describe() for p in self.pipelines]}

    def _head_updates(self, watched: _Watched):
        def updates() -> dict[str, tuple[Head, int]]:
            changed = {}
            for name, store in watched.stores.items():
                latest = store.current_version
                if latest == watched.seen.get(name):
                    continue
                watched.seen[name] = latest  # a version that fails to load is reported once, not every poll
                changed[name] = (store.head(latest), latest)
            if changed and self.telemetry is not None:
                versions = {**watched.pipeline.heads.versions(), **{n: v for n, (_, v) in changed.items()}}
                status = self._status()
                for entry in status["pipelines"]:
                    if entry["name"] == watched.pipeline.name:
                        entry["heads"] = versions
                status["head_version"] = next(iter(versions.values()))
                self.telemetry.status(**status)
            return changed

        return updates

    def run(self) -> list[RunSummary]:
        """Run every pipeline until its source ends (a file) or :meth:`stop` closes it."""
        settings = LoopSettings(metrics_interval_s=self.config.metrics.interval_s)
        sink = FanoutSink(*self.sinks)
        return [run_pipeline(w.pipeline, sink, settings, head_updates=self._head_updates(w)) for w in self._watched]

    def stop(self) -> None:
        """Close every source (from a signal handler or another thread); :meth:`run` then returns."""
        for p in self.pipelines:
            close = getattr(p.source, "close", None)
            if close is not None:
                close()

    def close(self, timeout_s: float = 10.0) -> bool:
        """Close the sources and telemetry; True when all telemetry was acknowledged in time (what
        is not stays in the on-disk outbox for the next start)."""
        self.stop()
        for p in self.pipelines:
            exit_ = getattr(p.source, "__exit__", None)
            if exit_ is not None:
                exit_(None, None, None)
        if self.telemetry is None:
            return True
        ok = self.telemetry.close(timeout_s=timeout_s)
        if not ok:
            log.warning("telemetry: %d messages not yet acknowledged stay in the outbox for the next start",
                        self.telemetry.counters.pending)
        return ok

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
