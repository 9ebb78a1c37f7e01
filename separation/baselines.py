"""Reference points for the U-Net: the mixture, oracle masks and two classic separators.

Every baseline maps a mixture ``(samples, channels)`` float32 at rate ``sr`` to estimates
``{"vocals", "accompaniment"}`` of the same shape and rate, so evaluate.py scores them exactly
as it scores a model's output. All of them work where the model works: at the model's rate
(8192 Hz; other rates are resampled there and back) and channel by channel.

``mixture``
    The mixture itself as both estimates: NSDR = 0 by definition, the floor.
``irm`` / ``ibm``
    Oracle masks computed from the true sources at the model's STFT (``audio.stft``, n_fft 1024,
    hop 768, 512 bins) and applied with ``audio.apply_mask``, like the model's own mask:
    ideal ratio mask ``|V| / (|V| + |A|)`` (SiSEC's "IRM1") and ideal binary mask ``|V| > |A|``.
    They peek at the references on purpose: no 8192 Hz magnitude-mask model can beat them
    (the IRM is near the ceiling, not exactly the SDR-optimal mask; it is the usual reference).
``hpss``
    Two-stage harmonic/percussive separation by median filtering, the recipe of Tachibana, Ono
    and Sagayama (IEEE/ACM TASLP 22(1), 2014) with FitzGerald's median-filter HPSS
    (``librosa.decompose.hpss``): on a long-window spectrogram (250 ms) the voice, whose pitch
    glides and wobbles, is not "harmonic" (sustained across frames) and falls with the drums
    into the percussive part; on a short-window spectrogram (31 ms) of that part the voice is
    sustained again and is the harmonic part, while the drums stay percussive. Vocals are the
    stage-2 harmonic part; accompaniment is the rest of the mixture.
``nmf``
    Unsupervised NMF (KL divergence, Lee and Seung's multiplicative updates, numpy, fixed seed)
    of the mixture magnitude at the model's STFT. NMF alone does not say which components are
    the voice; the rule used here never looks at the references: a component is vocal when a
    larger share of its magnitude falls in the vocal part of the ``hpss`` estimate than of the
    whole mixture's (median filtering labels the components, in the spirit of FitzGerald and
    Gainza, 2010). The vocal
    components' share of the model (a Wiener-style soft mask) is applied to the mixture STFT.
"""

from __future__ import annotations

import numpy as np

from separation import audio
from separation.audio import DEFAULT_PARAMS, AudioParams

#: Baselines in the order the tables list them.
BASELINES = ("mixture", "irm", "ibm", "hpss", "nmf")

#: Two-stage HPSS at 8192 Hz: long window 2048 (250 ms) then short window 256 (31 ms), each
#: with a quarter-window hop; librosa's default median-filter length (31 frames and bins).
HPSS_LONG = (2048, 512)
HPSS_SHORT = (256, 64)
HPSS_KERNEL = 31

#: NMF size: enough components for a few instruments and notes, few enough to stay fast.
NMF_COMPONENTS = 30
NMF_ITERATIONS = 200

_EPS = 1e-10


def separate(name: str, mixture: np.ndarray, sr: int, references: dict | None = None,
             params: AudioParams = DEFAULT_PARAMS) -> dict[str, np.ndarray]:
    """Run the baseline ``name`` (one of :data:`BASELINES`) on a ``(samples, channels)`` mixture.

    ``references`` (``{"vocals", "accompaniment"}`` like the mixture) is needed by the oracle
    masks only. Returns ``{"vocals", "accompaniment"}``, each shaped like ``mixture``, at ``sr``.
    """
    mixture = np.asarray(mixture, dtype=np.float32)
    if name == "mixture":
        return {"vocals": mixture.copy(), "accompaniment": mixture.copy()}
    if name in ("irm", "ibm"):
        if references is None:
            raise ValueError(f"the oracle baseline {name!r} needs the reference sources")
        vocals = _at_model_rate(
            lambda mix, voc, acc: oracle_vocals(mix, voc, acc, binary=name == "ibm", params=params),
            sr, params, mixture, references["vocals"], references["accompaniment"])
    elif name == "hpss":
        vocals = _at_model_rate(hpss_vocals, sr, params, mixture)
    elif name == "nmf":
        vocals = _at_model_rate(lambda mix: nmf_vocals(mix, params=params), sr, params, mixture)
    else:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    # The accompaniment is the rest of the mixture: every mask baseline is then a partition
    # of the mixture, as the model's (mask, 1 - mask) output is.
    return {"vocals": vocals, "accompaniment": mixture - vocals}


def _at_model_rate(fn, sr: int, params: AudioParams, *signals: np.ndarray) -> np.ndarray:
    """Apply ``fn`` (1-D signals at the model's rate -> 1-D vocals) per channel at ``sr``.

    Signals are ``(samples, channels)``; the result has the first signal's shape.
    """
    length, channels = signals[0].shape
    at_model = [audio.resample(s, sr, params.sample_rate) for s in signals]
    out = np.stack([fn(*(s[:, c] for s in at_model)) for c in range(channels)], axis=1)
    out = audio.resample(out.astype(np.float32), params.sample_rate, sr)
    return audio.fit_length(out, length)  # soxr may differ by a sample after a round trip between rates


def oracle_vocals(mixture: np.ndarray, vocals: np.ndarray, accompaniment: np.ndarray, binary: bool = False,
                  params: AudioParams = DEFAULT_PARAMS) -> np.ndarray:
    """Vocals by the ideal ratio (or binary) mask of the true sources, 1-D signals at the model rate.

    The mask has the model's ``n_bins`` rows and goes through ``audio.apply_mask``, so it is
    exactly as constrained as the U-Net's mask.
    """
    voc = np.abs(audio.model_bins(audio.stft(vocals, params), params))
    acc = np.abs(audio.model_bins(audio.stft(accompaniment, params), params))
    mask = (voc > acc).astype(np.float32) if binary else voc / np.maximum(voc + acc, _EPS)
    return audio.istft(audio.apply_mask(audio.stft(mixture, params), mask), len(mixture), params)


def _hpss_masks(signal: np.ndarray, n_fft: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """STFT of a 1-D signal and librosa's soft harmonic and percussive masks, each (bins, frames)."""
    import librosa

    spec = audio.stft(signal, n_fft=n_fft, hop_length=hop)
    harmonic, percussive = librosa.decompose.hpss(spec, kernel_size=HPSS_KERNEL, mask=True)
    return spec, harmonic, percussive


def hpss_vocals(mixture: np.ndarray) -> np.ndarray:
    """Vocals of a 1-D 8192 Hz mixture by two-stage HPSS (see the module docstring)."""
    n = len(mixture)
    spec, _, percussive = _hpss_masks(mixture, *HPSS_LONG)
    fluctuating = audio.istft(spec * percussive, n, n_fft=HPSS_LONG[0], hop_length=HPSS_LONG[1])
    spec, harmonic, _ = _hpss_masks(fluctuating, *HPSS_SHORT)
    return audio.istft(spec * harmonic, n, n_fft=HPSS_SHORT[0], hop_length=HPSS_SHORT[1])


def nmf(spec: np.ndarray, n_components: int = NMF_COMPONENTS, n_iter: int = NMF_ITERATIONS,
        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Factor a non-negative ``(bins, frames)`` matrix as ``W @ H`` minimising the KL divergence.

    Lee and Seung's multiplicative updates from a seeded uniform start; ``W`` is
    ``(bins, n_components)`` with unit-sum columns, ``H`` is ``(n_components, frames)``.
    """
    rng = np.random.default_rng(seed)
    spec = spec.astype(np.float64) + _EPS
    bins, frames = spec.shape
    scale = spec.mean()
    w = rng.uniform(0.1, 1.0, (bins, n_components)) * np.sqrt(scale)
    h = rng.uniform(0.1, 1.0, (n_components, frames)) * np.sqrt(scale)
    for _ in range(n_iter):
        h *= (w.T @ (spec / (w @ h))) / w.sum(axis=0)[:, None]
        w *= ((spec / (w @ h)) @ h.T) / h.sum(axis=1)[None, :]
    # Unit-sum bases carry the scale in the activations, which makes W comparable across runs.
    norm = w.sum(axis=0)
    return w / norm, h * norm[:, None]


def nmf_vocals(mixture: np.ndarray, params: AudioParams = DEFAULT_PARAMS, n_components: int = NMF_COMPONENTS,
               n_iter: int = NMF_ITERATIONS, seed: int = 0) -> np.ndarray:
    """Vocals of a 1-D mixture at the model rate by NMF with HPSS-labelled components."""
    spec = audio.stft(mixture, params)
    w, h = nmf(np.abs(spec), n_components, n_iter, seed)
    # Label components with the reference-free HPSS estimate on the same STFT grid: its vocal
    # share of each time-frequency bin, averaged over each component's magnitude, against the
    # same average over the whole mixture (HPSS gives the voice well under half of most bins,
    # so an absolute 0.5 would often label no component at all).
    hpss_voc = hpss_vocals(mixture)
    voc = np.abs(audio.stft(hpss_voc, params))
    acc = np.abs(audio.stft(mixture - hpss_voc, params))
    share = voc / np.maximum(voc + acc, _EPS)
    vocal_share = np.einsum("fk,ft,kt->k", w, share, h) / np.maximum(w.sum(axis=0) * h.sum(axis=1), _EPS)
    overall = np.sum(np.abs(spec) * share) / max(float(np.sum(np.abs(spec))), _EPS)
    vocal = vocal_share > overall
    mask = (w[:, vocal] @ h[vocal]) / np.maximum(w @ h, _EPS)
    return audio.istft(audio.apply_mask(spec, mask.astype(np.float32)), len(mixture), params)
