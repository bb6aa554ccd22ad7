"""Evaluation on a labelled folder: accuracy, confusion matrix, JSON shape."""

import json

import numpy as np

from edgetune.edge.evaluate import evaluate_embeddings, evaluate_folder
from edgetune.edge.head import Head


def test_evaluate_folder_counts_what_a_known_head_gets_right(bundle, models, labelled_folder):
    # Prepare: a head whose bias makes 'yes' win every clip (weights zero): it is right on exactly
    # the 4 readable 'yes' files and wrong on the 4 'whistle' ones.
    labels = bundle.head.labels
    bias = np.where(np.array(labels) == "yes", 10.0, 0.0)
    head = Head(np.zeros_like(bundle.head.weight), bias, labels)
    # Execute
    result = evaluate_folder(bundle, labelled_folder, head.weight, head.bias, head.labels, models=models)
    data = json.loads(json.dumps(result.to_json()))
    # Assert
    assert data["accuracy"] == 0.5 and data["n"] == 8
    assert data["per_class_recall"] == {"yes": 1.0, "whistle": 0.0}
    yes = list(labels).index("yes")
    assert np.array(data["confusion"])[:, yes].tolist() == [4, 4]
    assert data["labels"] == list(head.labels)
    # Rows are the labels the data has; 'whistle' is in the data, not the head: a row, never a column.
    assert data["row_labels"] == ["yes", "whistle"]
    assert np.array(data["confusion"]).shape == (2, len(head.labels))
    assert np.array(data["confusion"]).sum() == 8
    assert data["per_class_recall"]["whistle"] == 0.0 and "_background_" not in data["per_class_recall"]
    assert [s["path"].rsplit("/", 1)[-1] for s in data["skipped"]] == ["notes.txt", "broken.wav"]


def test_confusion_counts_and_render():
    head = Head(np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2), ("a", "b"))
    emb = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]], dtype=np.float32)
    result = evaluate_embeddings(emb, ["a", "b", "a", "c"], head)
    assert result.accuracy == 0.5 and result.n == 4
    assert result.confusion.tolist() == [[1, 1], [0, 1], [1, 0]]
    assert result.per_class_recall == {"a": 0.5, "b": 1.0, "c": 0.0}
    text = result.render()
    assert "accuracy 0.500 on 4 samples" in text and text.splitlines()[-1].startswith("c ")
