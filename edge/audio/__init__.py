"""The audio modality: its own stages of the device pipeline, in data-flow order.

- :mod:`.io`: audio files to float32 mono at the bundle's rate; a folder of labelled files.
- :mod:`.sources`: audio sources as URIs (a file, raw PCM on stdin, a microphone), in chunks.
- :mod:`.models`: the bundle's front-end and embedder in ONNX Runtime; whole clips to embeddings.
- :mod:`.features`, :mod:`.preprocess`: incremental front-end features, one step per hop.
- :mod:`.embed`, :mod:`.pooling`: window embeddings of each hop, pooled over the clip.
- :mod:`.detect`: posteriors to events (smoothing, threshold, refractory period).
- :mod:`.pipeline`: the stages assembled for the loop in :mod:`edgetune.edge.pipeline`.
- :mod:`.augment`: enrolment clips augmented on the device (gain, noise, shift, speed).
"""
