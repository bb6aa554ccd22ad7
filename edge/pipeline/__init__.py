"""The device's pipelines: source -> preprocess -> embed -> (fuse) -> heads -> postprocess -> sinks.

A modality brings only its own stages (:mod:`.stages` says what each must do); the one loop in
:mod:`.loop` runs any pipeline and owns the clock, the metrics, head swaps and the error
counters. :mod:`.heads` runs a pipeline's named heads on each embedding.

- audio (``edge/audio/``): a source of PCM chunks, hops of incremental front-end features,
  window embeddings pooled over the clip, and a detector (smoothing, threshold, refractory).
"""
