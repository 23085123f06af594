"""Synthesized corpora of three kinds of audio that the real corpora (ESC-10, spoken digits) lack.

- ``timbre``: the class is a synthetic instrument played at pitches over three octaves; tests that a
  representation groups by timbre rather than by pitch.
- ``temporal``: every class uses the same sound elements and pitch range, only their order, rhythm
  and contour differ (like words); tests that a representation keeps temporal structure, not just
  the average spectrum.
- ``events``: short sound events in a loud background chosen independently of the class; tests that
  a representation attends to the foreground event rather than the background.

Each clip comes from its own random generator seeded by (seed, kind, class, index), so a corpus is
deterministic for a seed and a clip does not change when ``per_class`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from tasks.synth import write_labels

KINDS = ("timbre", "temporal", "events")
INSTRUMENTS = ("clarinet", "bowed", "plucked", "bell", "flute", "nasal", "brass", "organ")
WORDS = ("low_high", "high_low", "low_high_low", "three_beats", "short_short_long", "long_short",
         "rising", "falling")
EVENTS = ("bark", "whistle", "knock", "clink", "siren", "engine", "creak", "trill")
BACKGROUNDS = ("pink", "brown", "babble", "rain", "hum")
LABELS = {"timbre": INSTRUMENTS, "temporal": WORDS, "events": EVENTS}
MIDI_RANGE = (40, 76)  # E2..E5: three octaves, so pitch varies far more within a class than timbre


def _partials(f0: np.ndarray | float, ratios, amps, n: int, sr: int, decays=None) -> np.ndarray:
    """A sum of sinusoids at ``ratios`` times the (possibly moving) fundamental ``f0``; partials above
    Nyquist are dropped, each may decay at its own rate (1/s)."""
    f0 = np.broadcast_to(np.asarray(f0, dtype=float), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    t = np.arange(n) / sr
    y = np.zeros(n)
    for j, (r, a) in enumerate(zip(ratios, amps)):
        if a == 0 or r * f0.max() >= 0.45 * sr:
            continue
        part = a * np.sin(r * phase + 2 * np.pi * (j * 0.618 % 1))  # fixed, spread phases: no big peak
        y += part * np.exp(-decays[j] * t) if decays is not None else part
    return y


def _adsr(n: int, sr: int, attack: float, release: float, decay: float = 0.0) -> np.ndarray:
    """Linear attack, exponential decay (rate ``decay``/s, 0 = sustained), linear release."""
    t = np.arange(n) / sr
    env = np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-decay * np.maximum(t - attack, 0))
    r = min(int(release * sr), n)
    env[n - r:] *= np.linspace(1, 0, r)
    return env


def _resonate(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    """A two-pole resonance at ``freq`` Hz with bandwidth ``bw`` Hz (unit gain near its peak)."""
    r = np.exp(-np.pi * bw / sr)
    return lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / sr), r * r], x)


def _coloured_noise(n: int, rng: np.random.Generator, slope: float) -> np.ndarray:
    """Noise whose power falls as 1/f**slope (1 pink, 2 brown), made in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=float)
    f[0] = 1.0
    return np.fft.irfft(spec / f ** (slope / 2), n)


def _instrument_note(name: str, f0: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of a synthetic instrument: its harmonic profile, envelope and noise do not depend on
    the pitch (except the nasal formants, which are fixed in Hz as in a real nasal instrument)."""
    n = int(dur * sr)
    k = np.arange(1, 41, dtype=float)
    vib = 1 + 0.006 * np.sin(2 * np.pi * rng.uniform(4.5, 6.0) * np.arange(n) / sr)
    noise = 0.0
    if name == "clarinet":  # odd harmonics only, organ-like sustain, a little breath
        y = _partials(f0, k, np.where(k % 2 == 1, 1 / k, 0), n, sr) * _adsr(n, sr, 0.04, 0.05)
        noise = 0.03
    elif name == "bowed":  # bright sawtooth spectrum, slow bow attack, vibrato
        y = _partials(f0 * vib, k, 1 / k, n, sr) * _adsr(n, sr, 0.18, 0.15)
    elif name == "plucked":  # comb of the pluck point, high harmonics die first, slightly stiff string
        stretch = k * np.sqrt(1 + 2e-4 * k**2)
        amps = np.abs(np.sin(np.pi * k * 0.18)) / k**1.2
        y = _partials(f0, stretch, amps, n, sr, decays=1.5 + 0.6 * k) * _adsr(n, sr, 0.004, 0.05)
    elif name == "bell":  # inharmonic partials of a struck bell, long ring
        ratios = [0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 2.66, 3.01, 4.1, 5.4]
        amps = [0.6, 1.0, 0.7, 0.5, 0.6, 0.35, 0.3, 0.25, 0.2, 0.12]
        y = _partials(f0, ratios, amps, n, sr, decays=0.8 + 0.5 * np.arange(10)) * _adsr(n, sr, 0.002, 0.05)
    elif name == "flute":  # nearly sinusoidal, hollow, breathy, soft attack
        y = _partials(f0 * vib, k[:4], [1, 0.22, 0.07, 0.03], n, sr) * _adsr(n, sr, 0.09, 0.1)
        noise = 0.12
    elif name == "nasal":  # buzzy source through fixed formants (an oboe-like, nasal colour)
        w = 1 / (1 + ((k * f0 - 1100) / 250) ** 2) + 0.7 / (1 + ((k * f0 - 2700) / 350) ** 2) + 0.05
        y = _partials(f0, k, w / np.sqrt(k), n, sr) * _adsr(n, sr, 0.03, 0.06)
    elif name == "brass":  # harmonics peaking around the 4th, swelling attack with a slight decay
        y = _partials(f0, k, k * np.exp(-k / 3.5), n, sr) * _adsr(n, sr, 0.07, 0.08, decay=0.4)
    elif name == "organ":  # drawbar octaves and fifths, instant on, flat sustain
        y = _partials(f0, [1, 2, 3, 4, 6, 8], [1, 0.8, 0.5, 0.6, 0.3, 0.4], n, sr) * _adsr(n, sr, 0.008, 0.02)
    else:
        raise ValueError(f"unknown instrument {name!r}")
    y = y / (np.abs(y).max() + 1e-9)
    if noise:  # breath: noise around the note's upper harmonics, following the note's envelope
        breath = _resonate(rng.standard_normal(n), min(3 * f0, 0.4 * sr), 2 * f0, sr)
        y += noise * breath / (np.abs(breath).max() + 1e-9) * np.abs(y).max() * _adsr(n, sr, 0.05, 0.05)
    return y


def _timbre_clip(label: str, sr: int, seconds: float, rng: np.random.Generator):
    n = int(sr * seconds)
    y, midis = np.zeros(n), []
    for _ in range(rng.integers(1, 5)):
        onset = rng.uniform(0.02, seconds - 0.6)
        dur = min(rng.uniform(0.5, 1.8), seconds - onset - 0.02)
        midi = float(rng.integers(MIDI_RANGE[0], MIDI_RANGE[1] + 1))
        note = _instrument_note(label, 440 * 2 ** ((midi - 69) / 12), dur, sr, rng)
        i = int(onset * sr)
        y[i: i + len(note)] += note * 10 ** (-rng.uniform(0, 12) / 20)
        midis.append(midi)
    return y, {"midi": midis}


# each word: (start semitone, end semitone, duration in s at tempo 1); total ~1.5-1.6 s, mean pitch ~3.5
_WORD_SHAPES = {
    "low_high": [(0, 0, 0.8), (7, 7, 0.8)],
    "high_low": [(7, 7, 0.8), (0, 0, 0.8)],
    "low_high_low": [(0, 0, 0.4), (7, 7, 0.8), (0, 0, 0.4)],
    "three_beats": [(3.5, 3.5, 0.5)] * 3,
    "short_short_long": [(3.5, 3.5, 0.3), (3.5, 3.5, 0.3), (3.5, 3.5, 1.0)],
    "long_short": [(3.5, 3.5, 1.1), (3.5, 3.5, 0.4)],
    "rising": [(0, 7, 1.6)],
    "falling": [(7, 0, 1.6)],
}


def _temporal_clip(label: str, sr: int, seconds: float, rng: np.random.Generator):
    n = int(sr * seconds)
    base, tempo = rng.uniform(140, 220), rng.uniform(0.75, 1.25)
    rolloff = rng.uniform(1.2, 1.6)  # a "voice" brightness shared by all classes: not a class cue
    k = np.arange(1, 31, dtype=float)
    shape = _WORD_SHAPES[label]
    gap = rng.uniform(0.08, 0.2) * tempo
    total = sum(d for *_, d in shape) * tempo + gap * (len(shape) - 1)
    t0, y = rng.uniform(0.05, max(seconds - total - 0.05, 0.06)), np.zeros(n)
    for s0, s1, d in shape:
        m = int(d * tempo * rng.uniform(0.9, 1.1) * sr)
        jitter = rng.normal(0, 0.3)
        f0 = base * 2 ** ((np.linspace(s0, s1, m) + jitter) / 12)
        el = _partials(f0, k, k**-rolloff, m, sr) * _adsr(m, sr, 0.015, 0.04)
        burst = int(0.025 * sr)  # a consonant-like noise onset on every element, in every class
        el[:burst] += 0.3 * np.diff(rng.standard_normal(burst + 1)) * np.hanning(burst) * np.abs(el).max()
        i = int(t0 * sr)
        el = el[: max(n - i, 0)]
        y[i: i + len(el)] += el * 10 ** (-rng.uniform(0, 4) / 20)
        t0 += d * tempo + gap
    return y, {"base_hz": base, "tempo": tempo}


def _event(label: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One occurrence of a sound event, some tenths of a second long."""
    if label == "bark":  # harmonic burst whose pitch drops, rough
        m = int(rng.uniform(0.15, 0.3) * sr)
        f0 = rng.uniform(350, 700) * np.linspace(1, rng.uniform(0.55, 0.75), m)
        f0 *= 1 + 0.08 * rng.standard_normal(m).cumsum() / np.sqrt(m)
        k = np.arange(1, 16, dtype=float)
        y = _partials(f0, k, 1 / k, m, sr) * (1 + 0.5 * np.sin(2 * np.pi * 70 * np.arange(m) / sr))
        y += 0.3 * rng.standard_normal(m) * np.abs(y).max()
        return _resonate(y, rng.uniform(900, 1400), 600, sr) * _adsr(m, sr, 0.005, 0.03, decay=6)
    if label == "whistle":  # near-pure high tone with vibrato
        m = int(rng.uniform(0.3, 0.8) * sr)
        f = rng.uniform(1200, 2800) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * np.arange(m) / sr))
        return _partials(f, [1, 2], [1, 0.1], m, sr) * _adsr(m, sr, 0.03, 0.05)
    if label == "knock":  # two or three damped low resonances with a click
        y, f, step = np.zeros(int(0.7 * sr)), rng.uniform(150, 400), rng.uniform(0.12, 0.22)
        for j in range(rng.integers(2, 4)):
            m = int(0.1 * sr)
            hit = _partials(f, [1, 2.3], [1, 0.5], m, sr, decays=[40, 70])
            hit[: int(0.004 * sr)] += 0.5 * rng.standard_normal(int(0.004 * sr))
            y[int(j * step * sr): int(j * step * sr) + m] += hit
        return y
    if label == "clink":  # high inharmonic partials with fast decay
        m = int(0.35 * sr)
        y = _partials(1.0, rng.uniform(2500, 7000, 5), rng.uniform(0.4, 1, 5), m, sr, decays=rng.uniform(15, 50, 5))
        y[: int(0.002 * sr)] += 0.5 * rng.standard_normal(int(0.002 * sr))
        return y
    if label == "siren":  # a tone sweeping up and down
        m = int(rng.uniform(1.0, 1.8) * sr)
        f = rng.uniform(700, 1100) * (1 + 0.35 * np.sin(2 * np.pi * rng.uniform(1, 2) * np.arange(m) / sr))
        return _partials(f, [1, 2, 3], [1, 0.4, 0.2], m, sr) * _adsr(m, sr, 0.05, 0.1)
    if label == "engine":  # a low buzz pulsing at the firing rate
        m, k = int(rng.uniform(0.8, 1.5) * sr), np.arange(1, 30, dtype=float)
        f0, t = rng.uniform(40, 80), np.arange(m) / sr
        y = _partials(f0, k, 1 / k, m, sr) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(8, 15) * t))
        return _resonate(y, 300, 400, sr) * _adsr(m, sr, 0.05, 0.1)
    if label == "creak":  # an irregular pulse train gliding in rate, through a wooden resonance
        m = int(rng.uniform(0.5, 1.0) * sr)
        rate = np.linspace(*rng.permutation([rng.uniform(15, 30), rng.uniform(60, 110)]), m)
        rate *= np.exp(0.25 * rng.standard_normal(m))  # jitter: a rough, not tonal, glide
        pulses = np.diff(np.floor(np.cumsum(rate) / sr), prepend=0.0)
        wood = _resonate(pulses, rng.uniform(600, 900), 150, sr)
        return (wood + 0.6 * _resonate(pulses, rng.uniform(1600, 2200), 200, sr)) * _adsr(m, sr, 0.03, 0.05)
    if label == "trill":  # a run of fast descending chirps, like a bird
        ln, rate = int(0.03 * sr), rng.uniform(12, 20)
        count = int(rng.integers(6, 14))
        y, t = np.zeros(int(count / rate * sr) + ln), np.arange(ln) / sr
        f_hi, f_lo = rng.uniform(4500, 6000), rng.uniform(2800, 3800)
        for j in range(count):
            chirp = np.sin(2 * np.pi * (f_hi * t + (f_lo - f_hi) * t**2 / (2 * t[-1]))) * np.hanning(ln)
            y[int(j / rate * sr): int(j / rate * sr) + ln] += chirp
        return y
    raise ValueError(f"unknown event {label!r}")


def _background(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    if kind in ("pink", "brown"):
        return _coloured_noise(n, rng, 1.0 if kind == "pink" else 2.0)
    if kind == "babble":  # several murmuring voices: formant-coloured harmonic tones, syllable-rate AM
        y = np.zeros(n)
        k = np.arange(1, 25, dtype=float)
        for _ in range(rng.integers(4, 8)):
            f0 = rng.uniform(100, 240) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 6)))
            f1, f2 = rng.uniform(300, 900), rng.uniform(1000, 2500)
            w = 1 / (1 + ((k * f0.mean() - f1) / 200) ** 2) + 0.5 / (1 + ((k * f0.mean() - f2) / 300) ** 2)
            am = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None)
            y += _partials(f0, k, w, n, sr) * am
        return y
    if kind == "rain":  # dense random drops of decaying high noise over a hiss
        drops = np.zeros(n)
        idx = rng.integers(0, n, int(rng.uniform(200, 800) * n / sr))
        drops[idx] = rng.uniform(0.2, 1, len(idx)) * rng.choice([-1, 1], len(idx))
        grain = np.exp(-np.arange(int(0.003 * sr)) / (0.0007 * sr))
        return np.convolve(drops, grain, mode="same") + 0.05 * np.diff(rng.standard_normal(n + 1))
    if kind == "hum":  # mains hum with harmonics and a little noise
        f = rng.choice([50.0, 60.0]) * (1 + 0.002 * rng.standard_normal())
        k = np.arange(1, 11, dtype=float)
        y = _partials(f, k, rng.uniform(0.1, 1, 10) / k**0.5, n, sr)
        return y + 0.05 * _coloured_noise(n, rng, 1.0) / 10
    raise ValueError(f"unknown background {kind!r}")


def _events_clip(label: str, sr: int, seconds: float, rng: np.random.Generator):
    n = int(sr * seconds)
    fg, active = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        ev = _event(label, sr, rng)[: n - 1] * 10 ** (-rng.uniform(0, 6) / 20)
        i = int(rng.integers(0, n - len(ev)))
        fg[i: i + len(ev)] += ev
        active[i: i + len(ev)] |= np.abs(ev) > 1e-3 * np.abs(ev).max()
    bg_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]  # drawn apart from the class
    bg = _background(bg_kind, n, sr, rng)
    snr_db = rng.uniform(0, 10)  # the event's power while it sounds, over the background's
    rms = lambda x: float(np.sqrt(np.mean(x**2)) + 1e-12)  # noqa: E731
    bg *= rms(fg[active]) / rms(bg) / 10 ** (snr_db / 20)
    return fg + bg, {"background": bg_kind, "snr_db": snr_db}


def kind_clip(kind: str, label: str, rng: np.random.Generator, sr: int = 16000, seconds: float = 4.0):
    """One clip of ``label`` in ``kind``, peak-normalized to 0.9, and what was drawn for it
    (``midi`` notes for timbre, ``background`` and ``snr_db`` for events)."""
    make = {"timbre": _timbre_clip, "temporal": _temporal_clip, "events": _events_clip}
    if kind not in make:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if label not in LABELS[kind]:
        raise ValueError(f"unknown label {label!r} for kind {kind!r}")
    y, info = make[kind](label, sr, seconds, rng)
    y = np.nan_to_num(y) + rng.standard_normal(len(y)) * 1e-4  # a faint floor: no digital silence
    return (0.9 * y / (np.abs(y).max() + 1e-12)).astype(np.float32), info


def make_kind_corpus(out: Path, kind: str, per_class: int = 30, seed: int = 0, sr: int = 16000,
                     seconds: float = 4.0) -> Path:
    """Write ``per_class`` 16-bit WAVs of each of ``kind``'s 8 classes as ``out/audio/<label>_<i>.wav``
    and ``out/labels.csv`` (``file,label`` as :func:`tasks.synth.make_corpus`); returns ``out``."""
    import soundfile as sf

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    out = Path(out)
    audio = out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, label in enumerate(LABELS[kind]):
        for i in range(per_class):
            rng = np.random.default_rng([seed, KINDS.index(kind), c, i])
            y, _ = kind_clip(kind, label, rng, sr, seconds)
            name = f"{label}_{i:03d}.wav"
            sf.write(audio / name, y, sr, subtype="PCM_16")
            rows.append((name, label))
    write_labels(out / "labels.csv", rows)
    return out
