"""Audio file -> fixed-length mono signal -> spectrogram image -> square blocks.

Everything here is a plain function of arrays and paths, so it can be unit-tested and
called from any process. Bad files raise :class:`Rejected` with a short reason.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from storage import Geometry, to_blocks

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class Rejected(Exception):
    """A file that cannot become a clip; ``str(exc)`` is the reason recorded in the store."""


class AudioSettings(BaseModel):
    """``[audio]``: how a file becomes a signal, the signal an image, and the image blocks.

    ``duration`` and ``n_frames`` may be ``"auto"``: resolved from the corpus (:meth:`resolve`)
    before any clip is read; ``auto`` then names the fields that were auto."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = 22050
    duration: float | Literal["auto"] = 5.0  # s; shorter clips are zero-padded, longer ones trimmed; auto: corpus 95th percentile, 0.5..10 s
    trim_db: float = 0.0  # > 0: cut leading/trailing audio quieter than peak - trim_db dB (librosa.effects.trim)
    time_normalize: bool = False  # the (trimmed) clip fills the image's width, whatever its length
    min_duration: float = 0.5  # shorter than this is rejected
    min_sample_rate: int = 4000  # native rates below this are rejected
    silence_db: float = -60.0  # peak below this (dBFS) is rejected as silent
    spectrogram: Literal["mel", "log", "linear"] = "mel"
    n_mels: int = 288  # image height: Mel bands (log / linear: bins, via n_fft = 2 (n_mels - 1))
    n_frames: int | Literal["auto"] = 432  # image width; auto: about one frame per 512 samples, a multiple of 8, 16..max_frames
    max_frames: int = 128
    n_fft: int = 2048  # Mel only
    block: int | Literal["image"] = 144  # square block side; "image": the whole image is one block
    channels: Literal[1, 3] = 3  # 1, or 3 = + delta + delta-delta (or, for a picture, its colours)
    top_db: float = 80.0  # dynamic range kept by the dB kinds
    image: Literal["features", "picture"] = "features"  # picture: the spectrogram as a saved colour image, pixels 0-255
    segment: float | None = None  # s: cut every file into windows this long (each one item); None: one clip per file
    hop: float | None = None  # s between window starts [default: segment]
    auto: tuple[str, ...] = ()  # set by resolve(): the fields that were "auto" (they stay auto in fingerprints)

    @model_validator(mode="before")
    @classmethod
    def _window_is_the_duration(cls, data):
        if isinstance(data, dict) and data.get("segment") is not None:
            if data["segment"] <= 0 or (data.get("hop") is not None and data["hop"] <= 0):
                raise ValueError("segment and hop must be positive numbers of seconds")
            data = {**data, "duration": data["segment"]}  # a window is an item: its image spans the window
        return data

    def starts(self, seconds: float) -> list[float]:
        """Start (s) of each item of a file ``seconds`` long: one at 0 without ``segment`` or for a
        file no longer than one window; else windows every ``hop`` s, the last one reaching the end."""
        if self.segment is None or seconds <= self.segment:
            return [0.0]
        hop = self.hop or self.segment
        return [round(i * hop, 6) for i in range(int(np.ceil(round((seconds - self.segment) / hop, 6))) + 1)]

    @property
    def resolved(self) -> bool:
        return self.duration != "auto" and self.n_frames != "auto"

    def resolve(self, durations: list[float]) -> "AudioSettings":
        """A copy with ``"auto"`` fields fixed from a sample of the corpus's clip durations (s)."""
        duration = self.duration
        if duration == "auto":
            q = float(np.percentile(durations, 95)) if len(durations) else 5.0
            duration = round(float(np.clip(q, 0.5, 10.0)), 2)
        frames = self.n_frames
        if frames == "auto":
            frames = int(min(self.max_frames, max(16, 8 * round(duration * self.sample_rate / 512 / 8))))
        return self.with_resolved({"duration": duration, "n_frames": frames})

    def with_resolved(self, values: dict) -> "AudioSettings":
        """A copy with the ``"auto"`` fields among ``values`` set to them."""
        auto = tuple(f for f in ("duration", "n_frames") if getattr(self, f) == "auto")
        return self.model_copy(update={**{f: values[f] for f in auto}, "auto": auto})

    def configured(self) -> dict:
        """The fields as the user configured them (``"auto"`` where resolved from the corpus)."""
        return {f: "auto" if f in self.auto else v for f, v in self.model_dump(exclude={"auto"}).items()}

    def geometry(self) -> Geometry:
        """The stored image and block shapes."""
        if not self.resolved:
            raise ValueError("duration / n_frames are 'auto': resolve them from the corpus first")
        if self.block == "image":
            return Geometry(freq=self.n_mels, frames=self.n_frames, block=self.n_mels, channels=self.channels, block_width=self.n_frames)
        return Geometry(freq=self.n_mels, frames=self.n_frames, block=self.block, channels=self.channels)

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def hop_length(self) -> int:
        return max(1, self.n_samples // self.n_frames)


def load_clip(path: str, spec: AudioSettings, data: bytes | None = None) -> tuple[np.ndarray, float]:
    """Decode ``path`` (a local path or an fsspec URL) to mono at ``spec.sample_rate``,
    padded/trimmed to ``spec.duration``. ``data``: the file's bytes, already read (then
    ``path`` only names the format).

    Only the first ``duration`` seconds are decoded, so an hour-long file costs what a
    5 s one does. Returns the signal and the seconds actually read.
    """
    y, seconds, _ = decode(path, spec, data)
    return y, seconds


def decode(path: str, spec: AudioSettings, data: bytes | None = None, start: float = 0.0) -> tuple[np.ndarray, float, float]:
    """:func:`load_clip` of the window from ``start`` (s): the signal, the seconds read and the file's
    length in seconds. Only the window is read (soundfile seeks), however long the file."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in AUDIO_EXTENSIONS:
        raise Rejected(f"unsupported format '{ext or '(none)'}' (expected {', '.join(AUDIO_EXTENSIONS)})")
    if data is not None:
        return _decode(io.BytesIO(data), len(data), spec, start)
    if "://" in str(path):
        import fsspec

        try:
            with fsspec.open(path, "rb") as fh:
                return _decode(fh, fh.size, spec, start)
        except FileNotFoundError as exc:
            raise Rejected(f"unreadable: {exc}") from exc
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise Rejected(f"unreadable: {exc.strerror or exc}") from exc
    return _decode(path, size, spec, start)


def _decode(source, size: int, spec: AudioSettings, start: float = 0.0) -> tuple[np.ndarray, float, float]:
    import librosa
    import soundfile as sf  # libsndfile reads wav, flac, ogg/vorbis/opus and mp3

    if size == 0:
        raise Rejected("empty file (0 bytes)")
    try:  # one open for the header and the samples (what librosa.load(sr=None, mono=False) does, less a second parse)
        fh = sf.SoundFile(source)
    except Exception as exc:
        raise Rejected(f"undecodable: {_short(exc)}") from exc
    with fh:
        rate = int(fh.samplerate)
        if rate < spec.min_sample_rate:
            raise Rejected(f"sample rate {rate} Hz below the minimum {spec.min_sample_rate} Hz")
        total = fh.frames / rate if fh.frames > 0 else float("nan")
        window = spec.duration + 1.0 if spec.trim_db > 0 and spec.segment is None else spec.duration  # room for leading silence
        try:  # native rate and channels first, so the samples can be checked before mixing and resampling
            if start > 0:
                fh.seek(int(round(start * rate)))
            y = fh.read(frames=int(window * rate), dtype="float32", always_2d=False).T
        except Exception as exc:
            raise Rejected(f"undecodable: {_short(exc)}") from exc
    if y.size == 0:
        raise Rejected("no audio samples decoded")
    if not np.all(np.isfinite(y)):
        raise Rejected("non-finite samples (NaN or Inf)")
    y = librosa.to_mono(y)
    seconds = y.size / rate
    if rate != spec.sample_rate:
        y = librosa.resample(y, orig_sr=rate, target_sr=spec.sample_rate)
    if seconds < spec.min_duration:
        raise Rejected(f"too short: {seconds:.2f} s < {spec.min_duration:.2f} s")
    peak = float(np.max(np.abs(y)))
    if peak <= 10 ** (spec.silence_db / 20):
        peak_db = 20 * np.log10(peak) if peak > 0 else float("-inf")
        raise Rejected(f"silent: peak {peak_db:.1f} dBFS below {spec.silence_db:.0f} dBFS")
    if spec.trim_db > 0:
        trimmed, _ = librosa.effects.trim(y, top_db=spec.trim_db)
        if len(trimmed) >= 0.05 * spec.sample_rate:  # keep the untrimmed clip if almost nothing is left
            y = trimmed
    if spec.time_normalize:  # keep the clip's own length (up to the window); the image stretches it
        return y[: spec.n_samples].astype(np.float32), seconds, total
    return librosa.util.fix_length(y, size=spec.n_samples).astype(np.float32), seconds, total


def clip_blocks(path: str, spec: AudioSettings, data: bytes | None = None, start: float = 0.0) -> tuple[np.ndarray, float, float]:
    """The one clip -> blocks path, for the corpus and for ``assign``: decode (the window from
    ``start``), image, tiled into blocks as the store keeps them (float16); the seconds of audio
    read, and the file's length in seconds."""
    y, seconds, total = decode(path, spec, data, start)
    geometry = spec.geometry()
    return to_blocks(image(y, spec), geometry.block, geometry.width).astype(np.float16), seconds, total


def probe_duration(path: str) -> float | None:
    """Seconds of audio in ``path`` from its header (no decoding); None when it cannot be read."""
    import soundfile as sf

    try:
        if "://" in str(path):
            import fsspec

            with fsspec.open(path, "rb") as fh:
                return float(sf.info(fh).duration)
        return float(sf.info(check_regular(path)).duration)  # (a pipe would block the read)
    except Exception:
        return None


def reject_kind(reason: str) -> str:
    """The kind of a reject reason, without its details: reasons read ``kind: details``
    (``undecodable: LibsndfileError: ...``, ``too short: 0.20 s < 0.50 s``)."""
    return reason.split(":")[0]


def check_regular(path: str) -> str:
    """``path``, unless it is a broken symbolic link or not a regular file (a pipe would block the
    read): then :class:`Rejected`. A file that does not exist is left to the read (an I/O error)."""
    if "://" not in path and not os.path.isfile(path) and os.path.lexists(path):
        if os.path.islink(path):
            raise Rejected(f"broken symbolic link: to {os.readlink(path)}")
        raise Rejected("not a regular file: a pipe, socket or device")
    return path


def _short(exc: Exception) -> str:
    # libsndfile's own words, without "Error opening <_io.BytesIO object at 0x...>" (the bytes it was given)
    text = getattr(exc, "error_string", None) or str(exc)
    text = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {text}"[:200]


def spectrogram(y: np.ndarray, spec: AudioSettings) -> np.ndarray:
    """(freq, frames) image in [0, 1].

    ``mel`` and ``log`` are dB relative to the clip's peak, clipped at ``-top_db`` and
    mapped to [0, 1]; ``linear`` is power divided by its peak.
    """
    import librosa

    hop = spec.hop_length
    if spec.time_normalize:  # at least two analysis frames per image column, then resampled in time
        hop = int(np.clip(len(y) // (2 * spec.n_frames), 32, 512))
    if spec.spectrogram == "mel":  # librosa.feature.melspectrogram, with the filterbank and window built once per process
        stft = librosa.stft(y, n_fft=spec.n_fft, hop_length=hop, window=hann(spec.n_fft))
        power = mel_basis(spec.sample_rate, spec.n_fft, spec.n_mels) @ (np.abs(stft) ** 2)
    elif spec.spectrogram in ("log", "linear"):
        n_fft = 2 * (spec.n_mels - 1)  # exactly `n_mels` bins
        power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, window=hann(n_fft))) ** 2
    else:
        raise ValueError(f"unknown spectrogram kind {spec.spectrogram!r} (mel, log or linear)")
    if spec.time_normalize:
        power = stretch(power, spec.n_frames)
    else:
        power = librosa.util.fix_length(power, size=spec.n_frames, axis=1)
    if spec.spectrogram == "linear":
        img = power / max(float(power.max()), 1e-12)
    else:
        db = librosa.power_to_db(power, ref=np.max, top_db=spec.top_db)
        img = (db + spec.top_db) / spec.top_db
    return np.clip(img, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """The Mel filterbank (n_mels, 1 + n_fft / 2), as ``librosa.feature.melspectrogram`` builds it for every call."""
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


@lru_cache(maxsize=8)
def hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window ``librosa.stft`` builds for every call (read-only: shared)."""
    import librosa

    w = librosa.filters.get_window("hann", n_fft, fftbins=True)
    w.flags.writeable = False
    return w


def stretch(x: np.ndarray, frames: int) -> np.ndarray:
    """Linear interpolation of every row of ``x`` (bands, t) to ``frames`` evenly spaced columns."""
    pos = np.linspace(0, x.shape[1] - 1, frames)
    left = np.minimum(pos.astype(int), x.shape[1] - 1)
    right = np.minimum(left + 1, x.shape[1] - 1)
    w = (pos - left).astype(x.dtype)
    return x[:, left] * (1 - w) + x[:, right] * w


def warm_up(spec: AudioSettings) -> None:
    """Run a synthetic 44.1 kHz WAV (1 s, or longer than ``min_duration``) through decoding and the image once.

    The first clip a process handles pays for importing librosa and compiling its numba
    functions (about 2 s); Dask workers call this when they join, not on their first chunk.
    """
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(44100 * max(1.0, spec.min_duration + 0.1))) / 44100
    sf.write(buf, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100, format="WAV", subtype="PCM_16")
    buf.seek(0)
    y, _, _ = _decode(buf, buf.getbuffer().nbytes, spec)
    image(y, spec)


PICTURE_SCALE = 255.0  # the values of a picture's pixels: 0..255


def band_frequencies(audio: dict) -> np.ndarray:
    """The centre frequency (Hz) of each image row, from a store's recorded audio settings: the Mel filterbank's
    centres (as ``librosa.filters.mel`` places them), or the STFT bins (``log``, ``linear``); top row first for pictures."""
    import librosa

    rate, n = audio["sample_rate"], audio["n_mels"]
    if audio.get("spectrogram", "mel") == "mel":
        bands = librosa.mel_frequencies(n + 2, fmin=0.0, fmax=rate / 2)[1:-1]
    else:
        bands = np.linspace(0.0, rate / 2, n)
    return bands[::-1].copy() if audio.get("image") == "picture" else bands


def value_scale(audio: dict | None) -> float:
    """The largest value a store's images hold (``audio``: its recorded audio settings): 1, or 255 for pictures."""
    return PICTURE_SCALE if (audio or {}).get("image") == "picture" else 1.0


def picture(s: np.ndarray) -> np.ndarray:
    """A [0, 1] spectrogram as the colour picture a plotted, saved and re-read spectrogram is:
    low frequencies at the bottom, librosa's ``magma`` colour map, 8-bit RGB pixels (0..255)."""
    from matplotlib import colormaps

    rgb = colormaps["magma"](s[::-1])[..., :3]
    return np.round(rgb * PICTURE_SCALE).astype(np.float32)


def image(y: np.ndarray, spec: AudioSettings) -> np.ndarray:
    """(freq, frames, channels) image: in [0, 1], channels 2-3 the scaled deltas; or a ``picture``."""
    import librosa

    s = spectrogram(y, spec)
    if spec.image == "picture":
        return picture(s)
    if spec.channels == 1:
        return s[..., None]
    if spec.channels != 3:
        raise ValueError("channels must be 1 or 3")
    out = [s]
    for order in (1, 2):
        d = librosa.feature.delta(s, order=order, axis=1)
        scale = max(float(np.abs(d).max()), 1e-12)
        out.append(0.5 + 0.5 * d / scale)
    return np.stack(out, axis=-1).astype(np.float32)
