"""report.html: one evaluation on one page, to look at and listen to (``evaluate.py --report``).

The page holds the two summary tables, the box plots, a per-track table that sorts on a click
on any column, and, for the worst tracks first, spectrograms of the mixture, the reference
vocals and the estimated vocals with a player for each: 10 s around the track's loudest vocal
passage, at the model's rate folded to mono. Everything is embedded (``data:`` URIs), so the
file opens anywhere without a network or the folder beside it; every track with media (JPEG
images, 16 kHz MP3 excerpts) makes the file larger, hence ``--report-tracks``.

It reads the scores evaluate.py computed and reads the tracks again for their audio, through
``separation.metrics`` and ``separation.baselines``.
"""

from __future__ import annotations

import base64
import html
import io
import math
import warnings
from pathlib import Path

import numpy as np

from separation import audio, cli, errors, metrics
from separation.audio import DEFAULT_PARAMS
from separation.files import atomic_write_text

#: Length of the excerpt shown and played for each track.
EXCERPT_SECONDS = 10.0
#: The players' rate: MP3's nearest rate above the model's (MP3 has no 8192 Hz).
PLAYER_RATE = 16000
#: Spectrograms show this many dB below the mixture's peak.
TOP_DB = 80.0


def write_report(path: Path, rows: list[dict], summary: list[dict], settings: metrics.Settings, plots: list[Path],
                 tracks: list, method: str, estimates: Path | None, stem_names: dict | None, media_tracks: int) -> Path:
    """Write ``path`` (atomically) from evaluate.py's per-track ``rows``, ``summary`` and box plot
    files, with media of ``method`` for the ``media_tracks`` worst of ``tracks`` (``datasets.Track``).

    ``method`` is the estimates' name when ``estimates`` (their folder, files named by
    ``stem_names`` as :func:`metrics.estimate_files` takes them) is given, else a baseline.
    """
    key = f"{settings.families[0]}_vocals_SDR"
    order = worst_first(rows, method, key)
    by_name = {track.name: track for track in tracks}
    sections = [track_section(by_name[name], method, rows, estimates, stem_names) for name in order[:media_tracks]]
    body = [
        f"<h1>Evaluation of {html.escape(method)}</h1>",
        f"<p>{len(order)} track(s). {html.escape(settings_line(settings))}</p>",
        "<h2>Summary</h2>",
        *(f"<h3>{html.escape(title)}</h3>{table_html(header, rows_)}"
          for title, header, rows_ in metrics.headline_tables(summary, settings.families)),
        "<h2>Box plots</h2>",
        "".join(f'<img class="plot" alt="{html.escape(p.stem)}" src="{data_uri(p.read_bytes(), "image/png")}">'
                for p in plots) or "<p>None drawn (--no-plots).</p>",
        "<h2>Per track</h2>",
        f"<p>Worst first by {html.escape(key)} of {html.escape(method)}; click a column's name to sort by it.</p>",
        f'<div class="wide">{per_track_table(rows, order, settings)}</div>',
        f"<h2>Listen: the worst {len(sections)} of {len(order)} track(s)</h2>",
        f"<p>{EXCERPT_SECONDS:g} s around each track's loudest reference vocals, at "
        f"{DEFAULT_PARAMS.sample_rate} Hz mono (players at {PLAYER_RATE} Hz); spectrograms 0 to "
        f"{DEFAULT_PARAMS.sample_rate // 2} Hz, {TOP_DB:g} dB below the mixture's peak.</p>",
        *sections,
    ]
    page = PAGE.format(title=html.escape(f"Evaluation of {method}"), style=STYLE, script=SCRIPT, body="\n".join(body))
    atomic_write_text(path, page)
    return path


def worst_first(rows: list[dict], method: str, key: str) -> list[str]:
    """Track names ordered by ``method``'s ``key`` column, lowest first, unscored tracks before all."""
    score = {r["track"]: r.get(key, math.nan) for r in rows if r["method"] == method}
    tracks = list(dict.fromkeys(r["track"] for r in rows))
    return sorted(tracks, key=lambda t: (math.isfinite(score.get(t, math.nan)), score.get(t, math.nan)))


def settings_line(settings: metrics.Settings) -> str:
    rate = f"{settings.sr} Hz" if settings.sr else "the references' own rate"
    channels = "stereo for v4" if settings.stereo else "mono"
    return f"Evaluated at {rate}, {channels}; v4 frames {settings.window:g} s, hop {settings.hop:g} s."


def _cell(value) -> str:
    if isinstance(value, float):
        shown = f"{value:.2f}" if math.isfinite(value) else "nan"
        return f'<td data-value="{value if math.isfinite(value) else ""}">{shown}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def table_html(header: list[str], rows: list[list], cls: str = "") -> str:
    """A table; a header cell's ``data-type`` tells the sorting script numbers from text."""
    kinds = ["number" if rows and isinstance(rows[0][i], (int, float)) else "text" for i in range(len(header))]
    head = "".join(f'<th data-type="{k}">{html.escape(h)}</th>' for h, k in zip(header, kinds))
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def per_track_table(rows: list[dict], order: list[str], settings: metrics.Settings) -> str:
    columns = metrics.metric_columns(settings.families)
    rank = {t: i for i, t in enumerate(order)}
    ordered = sorted(rows, key=lambda r: rank[r["track"]])  # stable: methods keep their order
    table = [[r["track"], r["method"], float(r["seconds"]), r["status"]]
             + [float(r.get(c, math.nan)) for c in columns] for r in ordered]
    return table_html(["track", "method", "seconds", "status"] + columns, table, cls="sortable")


# --------------------------------------------------------------------------------------------
# One track's media
# --------------------------------------------------------------------------------------------


def track_section(track, method: str, rows: list[dict], estimates: Path | None, stem_names: dict | None) -> str:
    """A track's heading, scores and three spectrogram-and-player panels (or why there are none)."""
    name = track.name
    mine = next((r for r in rows if r["track"] == name and r["method"] == method), {})
    scores = ", ".join(f"{c} {mine[c]:.2f}" for c in mine if c.endswith("vocals_SDR") and isinstance(mine[c], float))
    head = f"<h3>{html.escape(name)}</h3><p>{html.escape(method)}: {html.escape(scores or mine.get('status', ''))}</p>"
    try:
        signals, span = excerpt_signals(track, method, estimates, stem_names)
    except (audio.AudioError, errors.UserError) as err:
        return f'<section class="track">{head}<p>No excerpt: {html.escape(cli.first_line(err))}</p></section>'
    rate = DEFAULT_PARAMS.sample_rate
    peak = float(np.abs(audio.stft(signals["mixture"][:, 0], hop_length=DEFAULT_PARAMS.n_fft // 4)).max())
    panels = []
    for label, signal in signals.items():
        image = spectrogram_jpeg(signal[:, 0], peak)
        sound = mp3_bytes(signal, rate)
        panels.append(
            f'<figure><figcaption>{html.escape(label)}</figcaption>'
            f'<img class="spec" alt="spectrogram: {html.escape(label)}" src="{data_uri(image, "image/jpeg")}">'
            f'<audio controls preload="metadata" src="{data_uri(sound, "audio/mpeg")}"></audio></figure>')
    when = f"{span.start / rate:.1f} to {span.stop / rate:.1f} s"
    return f'<section class="track">{head}<p>Excerpt: {when}</p><div class="panels">{"".join(panels)}</div></section>'


def excerpt_signals(track, method: str, estimates: Path | None, stem_names: dict | None
                    ) -> tuple[dict[str, np.ndarray], slice]:
    """Mixture, reference vocals and ``method``'s vocals over the loudest-vocals excerpt, at the
    model's rate folded to mono: ``({label: (samples, 1)}, excerpt)``. The vocals are read from
    ``estimates`` (as :func:`write_report` takes it) or, without it, computed by the baseline
    ``method`` on the excerpt itself (a baseline's estimate was not kept)."""
    from separation import baselines

    rate = DEFAULT_PARAMS.sample_rate
    mono = metrics.Settings(sr=rate)
    references, sr = track.load()
    refs, _ = metrics.prepare_references(references, sr, mono)
    span = loudest_excerpt(refs["vocals"][:, 0], rate, EXCERPT_SECONDS)
    if estimates is not None:
        files, missing = metrics.estimate_files(estimates, track.name, stem_names)
        if missing:
            raise audio.AudioError(f"missing estimate {estimates / track.name / missing[0]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resampling notes are already in the CSV
            vocals = metrics.load_estimates(files, references, sr, mono, rate)["vocals"]
        vocals = audio.fit_length(vocals, refs["vocals"].shape[0])[span]
    else:
        cut = {k: v[span] for k, v in refs.items()}
        vocals = baselines.separate(method, cut["mixture"], rate, cut)["vocals"]
    return {"mixture": refs["mixture"][span], "reference vocals": refs["vocals"][span],
            f"{method} vocals": vocals}, span


def loudest_excerpt(vocals: np.ndarray, rate: int, seconds: float) -> slice:
    """The ``seconds``-long stretch of 1-D ``vocals`` with the most energy (the whole if shorter)."""
    length = int(seconds * rate)
    if vocals.shape[0] <= length:
        return slice(0, vocals.shape[0])
    energy = np.concatenate([[0.0], np.cumsum(vocals.astype(np.float64) ** 2)])
    start = int(np.argmax(energy[length:] - energy[:-length]))  # energy of every window, by its start
    return slice(start, start + length)


def spectrogram_jpeg(signal: np.ndarray, peak: float) -> bytes:
    """A 1-D signal's magnitude spectrogram in dB relative to ``peak``, low frequencies at the
    bottom, coloured with matplotlib's magma, as JPEG bytes (pixels only: no figure to draw)."""
    import matplotlib
    import matplotlib.image

    spec = np.abs(audio.stft(signal, hop_length=DEFAULT_PARAMS.n_fft // 4))[: DEFAULT_PARAMS.n_bins]
    spec = spec.reshape(-1, 2, spec.shape[1]).max(axis=1)  # 256 rows: the image is shown 200 pixels high
    db = 20 * np.log10(np.maximum(spec, peak * 10 ** (-TOP_DB / 20)) / peak)
    rgb = matplotlib.colormaps["magma"](1 + db[::-1] / TOP_DB)[..., :3]
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, (rgb * 255).astype(np.uint8), format="jpeg", pil_kwargs={"quality": 70})
    return buffer.getvalue()


def mp3_bytes(signal: np.ndarray, rate: int) -> bytes:
    """``(samples, 1)`` audio as MP3 bytes at :data:`PLAYER_RATE` (peaks above full scale clipped)."""
    import soundfile as sf

    buffer = io.BytesIO()
    clipped = np.clip(audio.resample(signal, rate, PLAYER_RATE), -1, 1)
    sf.write(buffer, clipped, PLAYER_RATE, format="MP3", bitrate_mode="VARIABLE", compression_level=0.9)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="icon" href="data:,"><style>{style}</style></head>
<body>
{body}
<script>{script}</script>
</body></html>
"""

STYLE = """
body { font-family: sans-serif; margin: 1em 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
table.sortable th { cursor: pointer; background: #f0f0f0; }
th[data-order="asc"]::after { content: " \\25B2"; } th[data-order="desc"]::after { content: " \\25BC"; }
img.plot { max-width: 48%; margin: 2px; }
.wide { overflow-x: auto; }
.panels { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-weight: bold; }
img.spec { display: block; width: 320px; height: 200px; image-rendering: auto; }
audio { width: 320px; }
"""

# Sort a table on a click on a column's name; empty (NaN) numbers stay last either way.
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, column) => {
  th.addEventListener("click", () => {
    const table = th.closest("table"), body = table.tBodies[0];
    const ascending = th.dataset.order !== "asc";
    table.querySelectorAll("th").forEach(h => delete h.dataset.order);
    th.dataset.order = ascending ? "asc" : "desc";
    const numeric = th.dataset.type === "number", sign = ascending ? 1 : -1;
    const value = row => {
      const cell = row.cells[column];
      return numeric ? parseFloat(cell.dataset.value) : cell.textContent;
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = value(a), y = value(b);
      if (!numeric) return sign * x.localeCompare(y);
      if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);
      return sign * (x - y);
    });
    rows.forEach(row => body.appendChild(row));
  });
});
"""
