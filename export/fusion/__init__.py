"""Fusion of audio and image embeddings on the workstation: pairs, corruptions, heads, report.

The data flow, one module each: :mod:`.pairs` makes audio-visual digit pairs (espeak-ng digits
with scikit-learn's handwritten ones, held-out voices and writer blocks) and embeds them with
whatever embedding functions it is given; :mod:`.corrupt` breaks a modality's raw input (noise,
silence, a blank frame); :mod:`.heads` fits the ``concat`` and ``gated`` fused heads (and the
single-modality heads they are compared with) into the arrays a bundle ships; :mod:`.report`
scores them all on the same held-out pairs, clean and with one modality corrupted. The device
runs the shipped heads with :mod:`edgetune.edge.fusion`.
"""

from __future__ import annotations

from .corrupt import AUDIO_CORRUPTIONS, IMAGE_CORRUPTIONS, corrupt_audio, corrupt_frames
from .heads import (FittedHead, FusionFitConfig, PairEmbeddings, corrupted_training_set, fit_concat_head,
                    fit_gated_head, fit_linear_head, gated_logits_torch, standardiser)
from .pairs import (PairConfig, PairSet, digit_frame, embed_audio, embed_images, embed_pairs, load_digit_frames,
                    make_pairs, pair_indices, writer_blocks)
from .report import (FusionStudy, FusionTable, embed_split, evaluate_heads, fit_heads, load_embeddings,
                     run_fusion_study, save_embeddings, study_embeddings)

__all__ = [
    "AUDIO_CORRUPTIONS", "IMAGE_CORRUPTIONS", "FittedHead", "FusionFitConfig", "FusionStudy", "FusionTable",
    "PairConfig", "PairEmbeddings", "PairSet", "corrupt_audio", "corrupt_frames", "corrupted_training_set",
    "digit_frame", "embed_audio", "embed_images", "embed_pairs", "embed_split", "evaluate_heads",
    "fit_concat_head", "fit_gated_head", "fit_heads", "fit_linear_head", "gated_logits_torch",
    "load_digit_frames", "load_embeddings", "make_pairs", "pair_indices", "run_fusion_study", "save_embeddings",
    "standardiser", "study_embeddings", "writer_blocks",
]
