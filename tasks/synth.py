"""A labelled demo corpus: distinct sound families with random variation.

Used by ``audioclust demo`` and by the tests; no data is downloaded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

FAMILIES = ("tone", "chirp_up", "chirp_down", "noise_bursts", "clicks", "harmonic", "rumble", "chirps_high")
# more families for corpora of known k beyond 8 (bench/quality's synthesized rows); the demo keeps FAMILIES
MORE_FAMILIES = ("warble", "buzz", "hiss", "thumps", "tremolo", "sweep_noise")


def _envelope(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    fade = int(0.02 * sr)
    env = np.ones(n)
    env[:fade] = np.linspace(0, 1, fade)
    env[-fade:] = np.linspace(1, 0, fade)
    return env


def synth_clip(family: str, sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(sr * seconds)
    t = np.arange(n) / sr
    if family == "tone":
        f = rng.uniform(300, 1200)
        y = np.sin(2 * np.pi * f * t)
    elif family in ("chirp_up", "chirp_down"):
        f0, f1 = rng.uniform(200, 500), rng.uniform(2500, 5000)
        if family == "chirp_down":
            f0, f1 = f1, f0
        period = rng.uniform(1.0, 2.5)
        phase_t = t % period
        inst = f0 + (f1 - f0) * phase_t / period
        y = np.sin(2 * np.pi * np.cumsum(inst) / sr)
    elif family == "noise_bursts":
        y = np.zeros(n)
        for _ in range(rng.integers(3, 7)):
            s = rng.integers(0, n - int(0.4 * sr))
            ln = int(rng.uniform(0.1, 0.4) * sr)
            y[s : s + ln] += rng.standard_normal(ln)
    elif family == "clicks":
        y = np.zeros(n)
        rate = rng.uniform(4, 12)
        idx = (np.arange(0, seconds, 1 / rate) * sr).astype(int)
        y[idx[idx < n]] = 1.0
        y = np.convolve(y, np.hanning(int(0.003 * sr)), mode="same")
    elif family == "harmonic":
        f0 = rng.uniform(100, 250)
        vib = 1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
        phase = 2 * np.pi * np.cumsum(f0 * vib) / sr
        y = sum(np.sin(k * phase) / k for k in range(1, 12))
    elif family == "rumble":
        w = rng.standard_normal(n)
        y = np.cumsum(w)
        y -= np.convolve(y, np.ones(2001) / 2001, mode="same")
    elif family == "chirps_high":
        y = np.zeros(n)
        ln = int(0.12 * sr)
        tt = np.arange(ln) / sr
        for s in np.arange(rng.uniform(0, 0.3), seconds - 0.15, rng.uniform(0.3, 0.6)):
            f0 = rng.uniform(3000, 4500)
            chirp = np.sin(2 * np.pi * (f0 * tt + 8000 * tt**2)) * np.hanning(ln)
            i = int(s * sr)
            y[i : i + ln] += chirp
    elif family == "warble":  # a tone whose pitch wobbles widely and fast
        f = rng.uniform(600, 1500) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(8, 14) * t))
        y = np.sin(2 * np.pi * np.cumsum(f) / sr)
    elif family == "buzz":  # a square wave: odd harmonics of a low note
        y = np.sign(np.sin(2 * np.pi * rng.uniform(60, 140) * t))
    elif family == "hiss":  # steady high-passed noise
        y = np.diff(rng.standard_normal(n + 1))
    elif family == "thumps":  # decaying low sine pulses
        y, f = np.zeros(n), rng.uniform(50, 90)
        for s in np.arange(rng.uniform(0, 0.5), seconds - 0.5, rng.uniform(0.6, 1.0)):
            i, ln = int(s * sr), int(0.4 * sr)
            y[i : i + ln] += np.sin(2 * np.pi * f * t[:ln]) * np.exp(-t[:ln] * 12)
    elif family == "tremolo":  # a mid tone whose loudness pulses
        y = np.sin(2 * np.pi * rng.uniform(1500, 2500) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    elif family == "sweep_noise":  # noise through a resonance that sweeps up and down
        from scipy.signal import lfilter

        y, w, state, r = np.zeros(n), rng.standard_normal(n), np.zeros(2), 0.97
        centre = 2000 + 1500 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t)
        for i in range(0, n, 512):  # the filter's state carried over: no click where the resonance moves
            a = [1, -2 * r * np.cos(2 * np.pi * centre[i] / sr), r * r]
            y[i : i + 512], state = lfilter([1 - r], a, w[i : i + 512], zi=state)
    else:
        raise ValueError(f"unknown family {family!r}")
    y = y / (np.max(np.abs(y)) + 1e-9)
    y = y * _envelope(n, sr, rng) * rng.uniform(0.3, 0.9)
    y += rng.standard_normal(n) * 10 ** (-rng.uniform(25, 40) / 20) * 0.5
    return np.clip(y, -1, 1).astype(np.float32)


def make_corpus(
    root: str | Path,
    per_family: int = 12,
    families: tuple[str, ...] = FAMILIES,
    sample_rate: int = 22050,
    seconds: float = 5.0,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``per_family`` WAV clips of each family under ``root/audio`` and a labels CSV.

    Returns ``(audio_dir, labels_csv)``. Deterministic for a given seed.
    """
    import soundfile as sf

    root = Path(root)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for fam in families:
        for i in range(per_family):
            name = f"{fam}_{i:03d}.wav"
            sf.write(audio / name, synth_clip(fam, sample_rate, seconds, rng), sample_rate, subtype="PCM_16")
            rows.append((name, fam))
    return audio, write_labels(root / "labels.csv", rows)


def write_labels(path: Path, rows: list[tuple[str, str]]) -> Path:
    """The labels CSV every synthesized corpus writes: ``file,label``, file relative to ``audio/``."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        w.writerows(rows)
    return path


def make_recording(path: str | Path, families: tuple[str, ...], seconds_each: float = 10.0, repeats: int = 4,
                   sample_rate: int = 22050, seed: int = 0) -> list[tuple[float, float, str]]:
    """A long recording of ``families`` taking turns (``seconds_each`` each, ``repeats`` rounds), as a
    16-bit WAV; returns its ``(start, end, family)`` parts."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    parts, signal, t = [], [], 0.0
    for _ in range(repeats):
        for family in families:
            y = synth_clip(family, sample_rate, seconds_each, rng)
            signal.append(0.8 * y / max(float(np.abs(y).max()), 1e-9))
            parts.append((t, t + seconds_each, family))
            t += seconds_each
    sf.write(str(path), np.concatenate(signal).astype(np.float32), sample_rate, subtype="PCM_16")
    return parts

