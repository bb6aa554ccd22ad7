"""The daemon, wired once from its config: bundle, head stores, pipelines, sinks, telemetry.

:class:`Device` is what ``edgetune edge run`` and ``edgetune demo`` both run::

    device = Device.from_config(config)          # verifies the bundle, opens sources and models
    with device:
        summaries = device.run()                 # until the source ends or device.stop()

It builds one pipeline per modality of the bundle, each by its modality's builder
(:data:`BUILDERS`: ``audio`` from the ``[audio]`` section, ``image`` from ``[camera]``), the
named heads of that modality from their versioned stores, a ``fused`` pipeline when the bundle
has fused heads (its source pairs the modalities' embeddings, ``pipeline/fuse.py``), and the sinks: extra sinks given by the caller, then telemetry when
``[mqtt] host`` is set. While running, it looks for head versions that changed beside it (an
``edge enroll`` or ``edge heads --rollback``) and swaps them in, and tells the server in the
retained status.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from edgetune.contract import ContractError

from .bundle import Bundle, load_bundle
from .config import DaemonConfig
from .head import Head
from .head_store import HeadStore
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


@dataclass(frozen=True, eq=False)
class Context:
    """What a modality's builder gets: the config, the state folder, the bundle, the providers,
    and sessions the caller already opened (``models``: the audio ones, or None)."""

    config: DaemonConfig
    state_dir: Path
    bundle: Bundle
    providers: ProviderSettings
    raw_rate_hz: int | None = None
    models: object | None = None


def _audio(ctx: Context, stores: dict[str, HeadStore]) -> Pipeline:
    from .audio.pipeline import from_config

    return from_config(ctx, stores)


def _image(ctx: Context, stores: dict[str, HeadStore]) -> Pipeline:
    from .image.pipeline import from_config

    return from_config(ctx, stores)


#: modality -> its pipeline builder, called with the context and the stores of the modality's heads.
BUILDERS = {"audio": _audio, "image": _image}


def _fused(ctx: Context, stores: dict[str, HeadStore], pairing) -> Pipeline:
    """The fused heads' pipeline: its source pairs the modalities' embeddings (``pipeline/fuse.py``);
    events go through a frame detector with the ``[camera]`` section's threshold, smoothing and hold."""
    from .image.detect import FrameDetector, FrameDetectorSettings
    from .pipeline.fuse import PairedPreprocessor, PassEmbedder
    from .pipeline.heads import HeadSet

    cam = ctx.config.camera
    settings = FrameDetectorSettings(threshold=cam.threshold, smoothing_frames=cam.smoothing_frames, hold_s=cam.hold_s)
    heads = HeadSet.from_stores(stores)

    def postprocessor(head_name: str, labels) -> FrameDetector:
        return FrameDetector(labels, settings, background_label=ctx.bundle.heads[head_name].spec.background_label)

    return Pipeline(name="fused", modality="fused", source=pairing, preprocess=PairedPreprocessor(pairing),
                    embed=PassEmbedder(), heads=heads, postprocessor=postprocessor, provider="numpy",
                    bundle_id=ctx.bundle.bundle_id, bundle_version=ctx.bundle.bundle_version,
                    info={"inputs": list(pairing.inputs), "driver": pairing.driver, "window_s": pairing.window_s})


class Device:
    """The device daemon: pipelines built from ``config``, reporting to ``sinks`` and telemetry."""

    def __init__(self, config: DaemonConfig, *, raw_rate_hz: int | None = None, sinks: Sequence[Sink] = (),
                 models=None) -> None:
        self.config = config
        self.state_dir = resolve_state_dir(config.state_dir)
        self.bundle = load_bundle(config.bundle, trust=config.bundle_trust(), state_dir=self.state_dir)
        manifest = self.bundle.manifest
        unsupported = [m for m in manifest.modalities if m not in BUILDERS]
        if unsupported:
            raise ContractError(f"bundle {self.bundle.bundle_id} has modalities {list(manifest.modalities)}; "
                                f"this device runs {sorted(BUILDERS)} pipelines")
        ctx = Context(config, self.state_dir, self.bundle, provider_settings(config), raw_rate_hz, models)
        self._watched = []
        self.pairing = None
        by_modality = {}
        for modality in manifest.modalities:
            stores = head_stores(self.bundle, self.state_dir, modality)
            if not stores:  # a fused head alone does not make a pipeline: each modality needs its own head
                raise ContractError(f"bundle {self.bundle.bundle_id} has no head on the {modality} embedding; "
                                    f"heads are {[(h.name, h.input) for h in manifest.heads]}")
            pipeline = BUILDERS[modality](ctx, stores)
            by_modality[modality] = pipeline
            self._watched.append(_Watched(pipeline, stores, pipeline.heads.versions()))
        fused = head_stores(self.bundle, self.state_dir, "fused")
        if fused:
            from .pipeline.fuse import Pairing

            self.pairing = Pairing(manifest.fusion.inputs, manifest.fusion.window_s)
            for modality in manifest.fusion.inputs:
                by_modality[modality].taps.append(self.pairing.tap(modality))
            pipeline = _fused(ctx, fused, self.pairing)
            self._watched.append(_Watched(pipeline, fused, pipeline.heads.versions()))
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
        """Run every pipeline until its source ends (a file) or :meth:`stop` closes it; several
        pipelines (a microphone and a camera) run side by side, one thread each."""
        settings = LoopSettings(metrics_interval_s=self.config.metrics.interval_s)
        sink = FanoutSink(*self.sinks)
        if len(self._watched) == 1:
            w = self._watched[0]
            return [run_pipeline(w.pipeline, sink, settings, head_updates=self._head_updates(w))]
        results: dict[int, RunSummary] = {}
        failures: list[BaseException] = []

        def one(i: int, w: _Watched) -> None:
            try:
                results[i] = run_pipeline(w.pipeline, sink, settings, head_updates=self._head_updates(w))
            except BaseException as exc:  # re-raised in the caller's thread, after the others stop
                failures.append(exc)
                self.stop()
            finally:
                if self.pairing is not None and w.pipeline.modality in self.pairing.inputs:
                    self.pairing.finish(w.pipeline.modality)

        threads = [threading.Thread(target=one, args=(i, w), name=f"pipeline-{w.pipeline.name}", daemon=True)
                   for i, w in enumerate(self._watched)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        return [results[i] for i in range(len(self._watched))]

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
