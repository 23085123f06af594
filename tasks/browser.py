"""The report's cluster browser: listen to every cluster, and to the clips of an interactive map.

One HTML fragment for ``report.html`` that needs nothing outside the page: per cluster its size,
its label mix (when there are labels), the clips nearest its centre and its least typical clips,
each with a small spectrogram and a player; and a 2-D map of all clips coloured by cluster
(hovering names the file and cluster, clicking plays it). Audio is embedded as Ogg Opus, 16 kHz
mono, for a bounded sample per cluster (the shown clips first); the other points have no player.
File names and labels are untrusted: escaped in HTML, and the JSON in ``<script>`` cannot close it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Callable, Sequence

import numpy as np

SHOWN = 3  # clips nearest the centre, and least typical, shown per cluster
AUDIO_PER_CLUSTER = 8  # clips of a cluster the map can play (the shown ones among them)
MAX_AUDIO = 240  # clips with audio on the whole page: bounds its size for large k
AUDIO_RATE = 16000  # Hz; Opus takes 8, 12, 16, 24 or 48 kHz
AUDIO_SECONDS = 6.0  # at most this much of each file
OPUS_LEVEL = 0.95  # libsndfile compression level: about 20 kbit/s, 13 KB for 5 s (0.9: 21 KB, 1.0: 4 KB and muddy)
PALETTE = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#ee8866", "#332288", "#117733",
           "#882255", "#44aa99", "#999933", "#cc6677", "#88ccee", "#aa4499", "#dddddd", "#ddaa33", "#004488", "#bb5566"]


def pick_clips(clusters: np.ndarray, own: np.ndarray, k: int, seed: int = 0) -> tuple[dict, list[int]]:
    """``({cluster: (nearest its centre, least typical)}, clips given audio)``: row indices, by distance ``own`` to
    the clip's own centre; audio for the shown clips and a seeded sample of the rest, per cluster."""
    rng = np.random.default_rng(seed)
    per = max(2 * SHOWN, min(AUDIO_PER_CLUSTER, MAX_AUDIO // max(1, k)))
    shown, audio = {}, []
    for c in range(k):
        members = np.flatnonzero(clusters == c)
        members = members[np.argsort(own[members], kind="stable")]
        central = members[:SHOWN].tolist()
        atypical = [i for i in members[::-1][:SHOWN].tolist() if i not in central]
        shown[c] = (central, atypical)
        rest = [i for i in members.tolist() if i not in central and i not in atypical]
        extra = rng.permutation(rest)[: max(0, per - len(central) - len(atypical))].tolist() if rest else []
        audio += central + atypical + extra
    return shown, sorted(audio)


def encode_audio(read: Callable[[], tuple[np.ndarray, int]]) -> str | None:
    """Base64 Ogg Opus of ``read()``'s ``(signal, rate)``: mono, 16 kHz, its first seconds; None when it cannot be read."""
    import librosa
    import soundfile as sf

    try:
        y, rate = read()
        y = librosa.to_mono(np.asarray(y, np.float32).T)[: int(AUDIO_SECONDS * rate)]
        y = librosa.resample(y, orig_sr=rate, target_sr=AUDIO_RATE) if rate != AUDIO_RATE else y
        buf = io.BytesIO()
        sf.write(buf, np.clip(y, -1, 1), AUDIO_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    except Exception:  # a moved or unreadable file: the clip is shown without a player
        return None
    return base64.b64encode(buf.getvalue()).decode()


def thumbnail(image: np.ndarray) -> str:
    """Base64 PNG of a (freq, frames) image in [0, 1], low frequencies at the bottom."""
    from matplotlib import colormaps
    from PIL import Image

    levels = np.round(np.clip(image[::-1], 0, 1) * 63).astype(np.uint8)  # 64 colours: a third of an RGB PNG's bytes
    thumb = Image.fromarray(levels, mode="P")
    thumb.putpalette((colormaps["magma"](np.linspace(0, 1, 64))[:, :3] * 255).astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    thumb.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def script_json(data) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` (so no ``</script>``), non-ASCII escaped."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def cluster_browser(paths: Sequence[str], labels: Sequence[str], clusters: np.ndarray, xy: np.ndarray | None, own: np.ndarray,
                    sure: np.ndarray, farther: np.ndarray | None, k: int, image_of: Callable[[int], np.ndarray],
                    audio_of: Callable[[int], str | None]) -> str:
    """The browser's HTML: cluster sections and the map, with their data and script. Per clip (rows of the
    arrays): ``own`` distance to its cluster's centre, ``sure`` in [0, 1] (the rank of its margin between its
    own and the next centre), ``farther`` the share of clips nearer their centres (or None)."""
    clusters = np.asarray(clusters)
    shown, with_audio = pick_clips(clusters, own, k)
    sounds = {i: a for i in with_audio if (a := audio_of(i)) is not None}
    ids = {i: n for n, i in enumerate(sounds)}
    labelled = any(labels)

    def card(i: int) -> str:
        rank = "" if farther is None else f" · farther out than {100 * farther[i]:.0f} % of clips"
        player = (f"<audio controls preload='none' data-sound='{ids[i]}'></audio>" if i in ids
                  else "<span class='muted'>audio not readable</span>")
        tag = f" · {html.escape(str(labels[i]))}" if labels[i] else ""
        return (f"<figure class='clip' data-row='{i}'><img alt='spectrogram' title='click to play' "
                f"src='data:image/png;base64,{thumbnail(image_of(i))}'><figcaption>{html.escape(str(paths[i]))}{tag}<br>"
                f"<span class='muted'>sure {sure[i]:.2f}{rank}</span></figcaption>{player}</figure>")

    parts = []
    for c in range(k):
        members = clusters == c
        mix = ""
        if labelled:
            names, counts = np.unique(np.asarray(labels)[members], return_counts=True)
            top = sorted(zip(counts.tolist(), names.tolist()), key=lambda t: (-t[0], t[1]))
            mix = "<p class='mix'>labels: " + ", ".join(f"{html.escape(n or '(none)')} {m}" for m, n in top[:6]) + \
                  (f", {len(top) - 6} more" if len(top) > 6 else "") + "</p>"
        central, atypical = shown[c]
        parts.append(f"<div class='cluster' id='cluster-{c}'><h3><span class='dot' style='background:{PALETTE[c % 20]}'></span>"
                     f"Cluster {c}: {int(members.sum())} clips, sure {np.mean(sure[members]) if members.any() else 0:.2f} on average</h3>{mix}"
                     f"<h4>nearest its centre</h4><div class='clips'>{''.join(card(i) for i in central)}</div>"
                     + (f"<h4>least typical</h4><div class='clips'>{''.join(card(i) for i in atypical)}</div>" if atypical else "")
                     + "</div>")
    points = {"f": [str(p) for p in paths], "c": clusters.tolist(), "s": np.round(sure, 2).tolist(),
              "a": [ids.get(i, -1) for i in range(len(paths))], "palette": PALETTE,
              "x": [] if xy is None else np.round(_unit(xy[:, 0]), 4).tolist(),
              "y": [] if xy is None else np.round(_unit(xy[:, 1]), 4).tolist()}
    data = {"points": points, "sounds": list(sounds.values())}
    intro = (f"<p>Every clip is a point, coloured by cluster: hover to name it, click to play it (the {len(sounds)} clips "
             f"drawn with a dark ring have audio in this page: up to {max(2 * SHOWN, min(AUDIO_PER_CLUSTER, MAX_AUDIO // max(1, k)))} "
             "per cluster). <i>sure</i>: how much nearer a clip lies to its own cluster's centre than to the next one, ranked among "
             "all clips (1: the clearest case, 0: the one nearest a border). <i>farther out than</i>: its distance to its "
             "centre ranked against the other clips' (near 100 %: unlike its cluster).</p>")
    return (STYLE + intro + "<div id='map-wrap'><svg id='map' viewBox='0 0 1000 700' role='img' aria-label='map of all clips'></svg>"
            "<div id='tip' hidden></div></div><p id='now-playing' class='muted'>nothing playing</p>"
            "<audio id='player' controls></audio>" + "".join(parts)
            + f"<script type='application/json' id='audioclust-data'>{script_json(data)}</script><script>{SCRIPT}</script>")


def browser_section(store, metrics: dict, clusterer, raw: np.ndarray, features: np.ndarray, clusters: np.ndarray,
                    xy: np.ndarray | None) -> str:
    """:func:`cluster_browser` for a run: its stored clips (store order), their ``raw`` and transformed
    ``features``, ``clusters`` and 2-D map ``xy``; audio read from the run's input folder."""
    from scipy.spatial.distance import cdist

    from tasks.preprocess import source_path

    ok = store.ok()
    slots = np.flatnonzero(ok)
    paths, labels = store.read("path")[ok].astype(str), store.read("label")[ok].astype(str)
    start = _column(store, "start", ok)
    k = max(int(clusters.max(initial=-1)) + 1, len(clusterer.centroids_))
    centroids = np.asarray(clusterer.centroids_, np.float32)
    dist = cdist(features, centroids) if centroids.shape[1] == features.shape[1] else np.zeros((len(features), k))
    own = dist[np.arange(len(clusters)), clusters]
    others = np.where(np.arange(dist.shape[1]) == clusters[:, None], np.inf, dist).min(1) if dist.shape[1] > 1 else own + 1
    margin = 1 - own / np.maximum(others, 1e-12)  # 0: as near another centre; whitened distances crowd it near 0
    sure = np.argsort(np.argsort(margin, kind="stable"), kind="stable") / max(1, len(margin) - 1)  # its rank among the clips
    farther = clusterer.predict_and_rank(raw)[1]
    root = str(store.attrs.get("input_dir") or metrics.get("input_dir") or "")  # the store's is absolute
    duration = (metrics.get("audio") or {}).get("duration")
    seconds = min(float(duration), AUDIO_SECONDS) if isinstance(duration, (int, float)) and duration > 0 else AUDIO_SECONDS

    def read(i: int):
        import soundfile as sf

        with sf.SoundFile(_open(source_path(root, paths[i]))) as fh:
            fh.seek(int(start[i] * fh.samplerate))
            return fh.read(int(seconds * fh.samplerate), dtype="float32", always_2d=True), fh.samplerate

    names = [p if s <= 0 else f"{p} @ {s:.1f} s" for p, s in zip(paths, start)]
    return cluster_browser(names, labels, clusters, xy, own, sure, farther, k,
                           image_of=lambda i: store.images(slots[i], slots[i] + 1)[0, :, :, 0],
                           audio_of=lambda i: encode_audio(lambda: read(i)))


def _column(store, name: str, ok: np.ndarray) -> np.ndarray:
    try:  # (a store from before windows of long files has no start: every item starts at 0)
        return store.read(name)[ok].astype(float)
    except Exception:
        return np.zeros(int(ok.sum()))


def _open(path: str):
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb").open()
    return path


def _unit(v: np.ndarray) -> np.ndarray:
    span = float(np.ptp(v))
    return (v - v.min()) / span if span > 0 else np.full_like(v, 0.5, dtype=float)


STYLE = """<style>
#map-wrap{position:relative}#map{width:100%;max-width:1000px;border:1px solid #ddd;background:#fcfcfc}
#map circle{cursor:pointer}#map circle.sound{stroke:#222;stroke-width:1.5}#map circle.on{stroke:#e00;stroke-width:3}
#tip{position:absolute;pointer-events:none;background:#222;color:#fff;padding:2px 6px;border-radius:3px;font-size:80%;white-space:nowrap}
.cluster{border-top:1px solid #ddd;margin-top:1em}.clips{display:flex;flex-wrap:wrap;gap:10px}
.clip{margin:0;width:210px;font-size:75%;word-break:break-all}.clip img{width:200px;height:80px;margin:0;cursor:pointer;image-rendering:pixelated}
.clip audio{width:200px;height:30px}.muted{color:#777}.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em}
.mix{font-size:85%}</style>"""

# textContent only: names and labels never become markup. Sounds become blob: URLs (preload none: decoded on play).
SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('audioclust-data').textContent);
  const P = data.points, urls = {};
  const url = (id) => urls[id] || (urls[id] = URL.createObjectURL(new Blob(
    [Uint8Array.from(atob(data.sounds[id]), (ch) => ch.charCodeAt(0))], {type: 'audio/ogg'})));
  const player = document.getElementById('player'), now = document.getElementById('now-playing');
  function play(el, id, what) {
    document.querySelectorAll('audio').forEach((a) => { if (a !== el) a.pause(); });
    if (!el.src) el.src = url(id);
    el.currentTime = 0;
    el.play().catch((e) => { now.textContent = 'cannot play: ' + e; });
    now.textContent = 'playing: ' + what;
  }
  document.querySelectorAll('audio[data-sound]').forEach((el) => { el.src = url(+el.dataset.sound); });
  document.querySelectorAll('.clip').forEach((fig) => {
    const el = fig.querySelector('audio[data-sound]'), row = +fig.dataset.row;
    fig.querySelector('img').addEventListener('click', () => {
      if (el) play(el, +el.dataset.sound, P.f[row] + ' (cluster ' + P.c[row] + ')');
    });
  });
  const svg = document.getElementById('map'), tip = document.getElementById('tip'), NS = 'http://www.w3.org/2000/svg';
  if (!P.x.length) { svg.remove(); return; }
  let on = null;
  const order = P.f.map((_, i) => i).sort((i, j) => (P.a[i] >= 0) - (P.a[j] >= 0));
  for (const i of order) {
    const c = document.createElementNS(NS, 'circle');
    c.setAttribute('cx', (20 + 960 * P.x[i]).toFixed(1));
    c.setAttribute('cy', (680 - 660 * P.y[i]).toFixed(1));
    c.setAttribute('r', P.a[i] >= 0 ? 6 : 4);
    c.setAttribute('fill', P.palette[P.c[i] % P.palette.length]);
    c.dataset.row = i;
    if (P.a[i] >= 0) c.classList.add('sound');
    c.addEventListener('mouseenter', (ev) => {
      tip.textContent = P.f[i] + ' - cluster ' + P.c[i] + ', sure ' + P.s[i] + (P.a[i] >= 0 ? ' - click to play' : ' - no audio in this page');
      const wrap = svg.parentNode.getBoundingClientRect();
      tip.style.left = (ev.clientX - wrap.left + 12) + 'px';
      tip.style.top = (ev.clientY - wrap.top + 12) + 'px';
      tip.hidden = false;
    });
    c.addEventListener('mouseleave', () => { tip.hidden = true; });
    c.addEventListener('click', () => {
      if (on) on.classList.remove('on');
      on = c; c.classList.add('on');
      if (P.a[i] >= 0) play(player, P.a[i], P.f[i] + ' (cluster ' + P.c[i] + ')');
      else now.textContent = P.f[i] + ' (cluster ' + P.c[i] + '): no audio in this page';
    });
    svg.appendChild(c);
  }
})();
"""
