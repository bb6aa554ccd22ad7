"""Enrolment from a folder of recordings: new labels, resampling, bad files, promotion policy."""

import numpy as np
import pytest

from edgetune.edge import enroll as enroll_module
from edgetune.edge.enroll import enroll, stratified_split
from edgetune.edge.head_store import HeadStore


@pytest.fixture
def store(bundle, tmp_path):
    return HeadStore(bundle, tmp_path / "state")


def test_enroll_learns_a_new_label_and_the_promoted_head_becomes_current(bundle, models, store, labelled_folder):
    # Execute: 8 readable files: 4 'yes' (low tones), 3 'whistle' (high tones) at 16 kHz and 1 at
    # 44.1 kHz stereo (resampled, mixed down); the bundle's (random) head knows no 'whistle'.
    report = enroll(bundle, labelled_folder, store, models=models)
    # Assert: the held-out files go from wrong to right, so the refit is promoted and is current.
    assert report.n_files == 8 and report.n_fit == 6 and report.n_holdout == 2
    assert report.per_label == {"whistle": {"fit": 3, "held_out": 1}, "yes": {"fit": 3, "held_out": 1}}
    assert report.new_labels == ("whistle",) and report.labels == bundle.head.labels + ("whistle",)
    assert report.version == 1 and report.parent_version == 0
    assert report.accuracy_before == 0.0 and report.accuracy_after == 1.0
    assert report.promoted and report.combined_accuracy_after > report.combined_accuracy_before
    assert store.current_version == 1
    assert store.head().predict(models.embed_clips(_held_out_clips(labelled_folder, models))) == ["yes", "whistle"]
    saved = {v.version: v for v in store.versions()}[1]
    # Promoted: refitted on every file (8) beside the replay samples it used.
    assert saved.labels == report.labels and saved.n_samples == report.n_files + report.n_replay_fit


def _held_out_clips(folder, models):
    from edgetune.edge.audio.io import load_clip

    return np.stack([load_clip(folder / "yes" / "yes_3.wav", 16000, models.clip_samples),
                     load_clip(folder / "whistle" / "w_2.wav", 16000, models.clip_samples)])


def test_a_refit_that_changes_nothing_ties_and_is_promoted(bundle, models, store, labelled_folder, monkeypatch):
    # Prepare: a fake refit that returns the current head as it is (every label it had, no new one).
    def unchanged(embeddings, labels, **kwargs):
        return np.asarray(kwargs["init_weight"]), np.asarray(kwargs["init_bias"]), tuple(kwargs["init_labels"])

    monkeypatch.setattr(enroll_module, "fit_head", unchanged)
    # Execute
    report = enroll(bundle, labelled_folder, store, models=models, l2=1.0)
    # Assert: the same accuracy before and after is "not worse": promoted, and current.
    assert report.combined_accuracy_after == report.combined_accuracy_before
    assert report.promoted and store.current_version == 1


def test_augmentation_and_the_l2_choice_are_reported(bundle, models, store, labelled_folder):
    report = enroll(bundle, labelled_folder, store, models=models, copies=2)
    assert report.copies == 2 and not report.window_fit  # the DS-CNN reads its clip in one window
    assert report.l2_choice.startswith("cross-validated") or report.l2_choice.startswith("the bundle's")
    assert "augmented copies per clip" in report.render()


def test_unreadable_files_are_reported_by_name_and_skipped(bundle, models, store, labelled_folder):
    report = enroll(bundle, labelled_folder, store, models=models)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in report.skipped}
    assert set(reasons) == {"broken.wav", "notes.txt"}
    assert "unreadable" in reasons["broken.wav"]
    assert "broken.wav" in report.render()


def test_a_worse_refit_is_saved_but_not_promoted(bundle, models, store, labelled_folder, monkeypatch):
    def fake_fit_head(embeddings, labels, **kwargs):  # a fake refit whose head always says 'never-right'
        new_labels = tuple(kwargs["init_labels"]) + ("never-right",)
        bias = np.zeros(len(new_labels), np.float32)
        bias[-1] = 10.0
        return np.zeros((len(new_labels), embeddings.shape[1]), np.float32), bias, new_labels

    monkeypatch.setattr(enroll_module, "fit_head", fake_fit_head)
    report = enroll(bundle, labelled_folder, store, models=models)
    assert report.combined_accuracy_after == 0.0 < report.combined_accuracy_before
    assert not report.promoted and "drop" in report.reason
    assert store.current_version == 0 and [v.version for v in store.versions()] == [0, 1]


def test_split_holds_out_at_least_one_per_label_with_two_or_more():
    labels = ["a"] * 2 + ["b"] * 8 + ["c"]
    fit, held = stratified_split(labels, 0.25, seed=0)
    held_labels = sorted(labels[i] for i in held)
    assert held_labels == ["a", "b", "b"] and sorted(fit.tolist() + held.tolist()) == list(range(11))
    again = stratified_split(labels, 0.25, seed=0)
    assert np.array_equal(again[1], held)
