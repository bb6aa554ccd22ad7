"""The DS-CNN embedder and its self-describing checkpoint."""

import pytest
import torch
from torch import nn

from edgetune.contract.manifest import MfccParams
from edgetune.export.audio.model import DsCnn, DsCnnConfig, KeywordModel, load_checkpoint, save_checkpoint


def test_embedder_maps_a_feature_map_to_one_vector_per_clip():
    embedder = DsCnn(DsCnnConfig(n_frames=97, n_features=13, channels=32)).eval()
    assert embedder(torch.randn(3, 97, 13)).shape == (3, 32)


def test_normalisation_is_applied_inside_the_model():
    # Prepare: a model whose normalisation maps these features to zero
    embedder = DsCnn(DsCnnConfig(n_frames=20, n_features=13, channels=8, n_blocks=1)).eval()
    features = torch.full((2, 20, 13), 300.0)
    other = DsCnn(DsCnnConfig(n_frames=20, n_features=13, channels=8, n_blocks=1)).eval()
    other.load_state_dict(embedder.state_dict())
    # Execute
    embedder.set_normalization(torch.full((13,), 300.0), torch.ones(13))
    # Assert
    torch.testing.assert_close(embedder(features), other(torch.zeros(2, 20, 13)))


def test_checkpoint_rebuilds_the_same_model_from_its_own_config(tmp_path):
    # Prepare
    config = DsCnnConfig(n_frames=97, n_features=13, channels=16, n_blocks=2)
    model = KeywordModel(DsCnn(config), nn.Linear(16, 3)).eval()
    features = torch.randn(2, 97, 13)
    # Execute
    save_checkpoint(tmp_path / "m.pt", model, labels=("a", "b", "c"), params=MfccParams(), clip_samples=16000)
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    # Assert
    assert meta["config"] == config and meta["labels"] == ("a", "b", "c") and meta["frontend"] == MfccParams()
    torch.testing.assert_close(loaded(features), model(features))


@pytest.mark.parametrize("field, value", [("channels", 0), ("first_kernel", (10,)), ("dropout", 1.0)])
def test_config_refuses_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        DsCnnConfig(n_frames=97, n_features=13, **{field: value})
