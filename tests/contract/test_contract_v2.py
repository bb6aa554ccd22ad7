"""Contract v2: the manifest's per-modality specs, named heads, fusion and the telemetry's pipelines."""

import json

import pytest

from edgetune.contract import messages
from edgetune.contract.audio_spec import POOLINGS, AudioEmbedderSpec, AudioSpec, MfccParams, SpeechMelParams
from edgetune.contract.errors import ContractError
from edgetune.contract.graphs import Graph
from edgetune.contract.image_spec import ImageSpec
from edgetune.contract.manifest import FusionSpec, HeadSpec, Manifest


def _speech_audio(n_windows=9, pooling="flat"):
    frames = 76 + 8 * (n_windows - 1)
    return AudioSpec(frontend=SpeechMelParams(floor_db=-20.0),
                     embedder=AudioEmbedderSpec("speech_embedding", 76, 96, n_windows=n_windows, stride_frames=8,
                                                pooling=pooling),
                     clip_samples=512 + (frames - 1) * 160)


def _manifest(**changes):
    fields = dict(bundle_id="kws", bundle_version="2.0.0", created_at="2026-12-01T00:00:00+00:00",
                  heads=(HeadSpec("keywords", ("_background_", "yes"), file="head_keywords.npz",
                                  background_label="_background_"),),
                  audio=_speech_audio())
    fields.update(changes)
    return Manifest(**fields)


def test_a_manifest_survives_its_json_form_exactly():
    m = _manifest(image=ImageSpec("efficientnet_lite0", 224, 224, 1280, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                  heads=(HeadSpec("keywords", ("a", "b"), file="head_keywords.npz"),
                         HeadSpec("objects", ("cat", "cup"), input="image", file="head_objects.npz",
                                  replay_file="replay_objects.npz")))
    again = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    assert again.modalities == ("audio", "image")
    assert [h.name for h in again.heads_on("image")] == ["objects"]


def test_the_clip_must_be_exactly_the_embedders_windows():
    with pytest.raises(ContractError, match=r"audio.clip_samples is 16000; expected a clip whose 97 frames"):
        AudioSpec(frontend=SpeechMelParams(floor_db=-20.0),
                  embedder=AudioEmbedderSpec("speech_embedding", 76, 96, n_windows=3, stride_frames=8,
                                             pooling="mean"),
                  clip_samples=16000)


def test_pooled_widths_follow_the_pooling():
    assert _speech_audio(9, "flat").embedding_size == 9 * 96
    assert _speech_audio(9, "seg3").embedding_size == 3 * 96
    assert _speech_audio(9, "mean").embedding_size == 96
    assert AudioSpec.whole_clip(MfccParams(), 16000, 64).embedding_size == 64


def test_every_pooling_the_contract_names_is_one_the_device_computes():
    from edgetune.edge.audio.pooling import KINDS

    assert set(POOLINGS) == set(KINDS) | {"none"}


def test_a_head_on_a_modality_the_bundle_lacks_is_refused():
    with pytest.raises(ContractError, match=r"heads\[objects\].input is 'image'; expected one of \['audio'\]"):
        _manifest(heads=(HeadSpec("objects", ("cat", "cup"), input="image"),))


def test_a_fused_head_needs_a_fusion_and_says_how_it_combines():
    with pytest.raises(ContractError, match=r"heads\[both\].input is 'fused'"):
        _manifest(heads=(HeadSpec("both", ("a", "b"), input="fused", fusion="concat"),))
    with pytest.raises(ContractError, match=r"heads\[both\].fusion is None; expected one of \['concat', 'gated'\]"):
        HeadSpec("both", ("a", "b"), input="fused")
    with pytest.raises(ContractError, match=r"heads\[words\].fusion is 'gated'; expected null"):
        HeadSpec("words", ("a", "b"), input="audio", fusion="gated")


def test_a_fusion_reads_two_modalities_within_a_window():
    with pytest.raises(ContractError, match="fusion.inputs"):
        FusionSpec(inputs=("audio",))
    with pytest.raises(ContractError, match="fusion.inputs"):
        FusionSpec(inputs=("audio", "audio"))
    with pytest.raises(ContractError, match=r"fusion.window_s is 0; expected seconds in \(0, 60\]"):
        FusionSpec(inputs=("audio", "image"), window_s=0)
    with pytest.raises(ContractError, match="fusion.window_s"):
        FusionSpec(inputs=("audio", "image"), window_s=True)
    assert FusionSpec.from_dict(FusionSpec(("audio", "image"), 0.5).to_dict()) == FusionSpec(("audio", "image"), 0.5)
    assert not FusionSpec().enabled


def test_unknown_front_end_kinds_and_keys_are_named():
    data = _manifest().to_dict()
    data["audio"]["frontend"]["kind"] = "lpc"
    with pytest.raises(ContractError, match=r"audio.frontend.kind is 'lpc'; expected one of"):
        Manifest.from_dict(data)
    data = _manifest().to_dict()
    data["audio"]["frontend"]["n_fft"] = 1024
    with pytest.raises(ContractError, match=r"audio.frontend keys is \['n_fft'\]"):
        Manifest.from_dict(data)


def test_the_pretrained_front_end_is_fixed():
    with pytest.raises(ContractError, match="audio.frontend.n_mels is 40; expected 32"):
        SpeechMelParams(floor_db=-20.0, n_mels=40)


def test_graphs_have_an_fp32_variant_and_only_known_precisions():
    with pytest.raises(ContractError, match="precision"):
        Graph.from_dict({"variants": [{"file": "a.onnx", "precision": "int4"}]}, "audio.embedder_graph")
    assert Graph.fp32("a.onnx").file("fp32") == "a.onnx"


def test_two_parts_may_not_claim_one_file():
    with pytest.raises(ContractError, match="each file used by one part only"):
        _manifest(heads=(HeadSpec("a", ("x", "y"), file="head.npz"), HeadSpec("b", ("x", "y"), file="head.npz")))


def test_schema_1_manifests_are_refused_with_how_to_re_export():
    data = _manifest().to_dict()
    data["schema_version"] = 1
    with pytest.raises(ContractError, match="schema_version 1 is from an older edgetune.*re-export it"):
        Manifest.from_dict(data)
    data["schema_version"] = True  # a bool is not a version
    with pytest.raises(ContractError, match="schema_version is True; expected 2"):
        Manifest.from_dict(data)


def _event_body(**changes):
    body = {"pipeline": "audio", "head": "keywords", "label": "yes", "score": 0.9, "modality": "audio",
            "source": "alsa", "offset_s": 1.0, "bundle_id": "kws", "bundle_version": "2.0.0", "head_version": 0}
    body.update(changes)
    return body


def test_events_say_which_pipeline_and_head_they_come_from():
    messages.make("jetson-01", 1, 1.0, "event", _event_body())
    body = _event_body()
    del body["pipeline"]
    with pytest.raises(ContractError, match=r"event body.pipeline is None; expected the pipeline's name"):
        messages.make("jetson-01", 1, 1.0, "event", body)


def test_the_status_lists_the_pipelines():
    pipeline = {"name": "audio", "modality": "audio", "source": "alsa", "bundle_id": "kws",
                "bundle_version": "2.0.0", "provider": "CPUExecutionProvider", "heads": {"keywords": 3}}
    messages.make("jetson-01", 1, 1.0, "status", {"state": "online", "pipelines": [pipeline]})
    with pytest.raises(ContractError, match="status body.pipelines"):
        messages.make("jetson-01", 1, 1.0, "status", {"state": "online", "pipelines": [dict(pipeline, heads={})]})


def test_envelopes_of_schema_1_are_refused():
    payload = json.dumps({"schema": 1, "device": "jetson-01", "seq": 1, "observed_at": 1.0, "type": "event",
                          "body": _event_body()}).encode()
    with pytest.raises(ContractError, match="schema is 1; expected 2"):
        messages.decode(payload)
