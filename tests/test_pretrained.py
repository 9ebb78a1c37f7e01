"""The shipped model (pretrained/) loads with its parameters and separates singing it never heard."""

import numpy as np
import pytest

from separation import datasets, metrics
import inference
import unet_model


def test_pretrained_model_is_the_default_and_fits_the_size_limit():
    path = unet_model.model_file(None)
    assert path.parent.name == "pretrained" and path.suffix == ".keras"
    assert path.stat().st_size < 45e6


@pytest.mark.slow
def test_pretrained_model_separates_unseen_mir1k_singers(mir1k_root):
    """Two clips of a test-split singer (never in training): the vocals gain several dB over the mixture."""
    separator = inference.Separator()  # the shipped model
    clips = [t for t in datasets.find_tracks("mir1k", mir1k_root, split="test", unit="clip")][:2]
    for clip in clips:
        refs, sr = clip.load()
        stems = separator.separate(refs["mixture"], sr)
        np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], refs["mixture"], atol=1e-5)
        scores = metrics.score_track(refs, stems, sr, settings=metrics.Settings(families=("v3",)))
        assert scores["v3_vocals_NSDR"] > 3.0, (clip.name, scores["v3_vocals_NSDR"])
        assert scores["v3_accompaniment_NSDR"] > 3.0, (clip.name, scores["v3_accompaniment_NSDR"])


def test_model_card_starts_with_hugging_face_metadata_and_states_the_terms():
    """The card's YAML block (Hugging Face's model-card metadata) parses and names what the Hub
    shows; the weights' terms are stated, apart from the code's MIT licence."""
    import yaml

    card = (unet_model.PRETRAINED / "README.md").read_text()
    assert card.startswith("---\n")
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert metadata["license"] == "other" and metadata["license_name"] and metadata["library_name"] == "keras"
    assert "MIR-1K" in metadata["datasets"] and metadata["metrics"] and "source-separation" in metadata["tags"]
    assert "\n## Terms\n" in card and "research" in card.split("\n## Terms\n")[1]
    assert (unet_model.PRETRAINED.parent / "LICENSE").read_text().startswith("MIT License")
