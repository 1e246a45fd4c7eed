"""Offline stand-in for SC09: spoken-digit WAVs in the SC09 layout, made with no download.

    python data_scripts/make_demo_speech.py --out data/sc09_demo [--speakers 40] [--engine auto]
    seqmamba.data.demo_speech.write_demo_speech(out, speakers=40)     # the same from Python

Writes ``out/zero/*.wav .. out/nine/*.wav`` (16 kHz mono PCM16, at most 16000 samples) plus
``validation_list.txt`` and ``testing_list.txt`` (10 % of the "speakers" each, as Speech Commands
splits by speaker). Engines:

- ``espeak``: the digit words spoken by espeak-ng with varied voice, pitch and speed (needs the
  ``espeak-ng`` program; resampled to 16 kHz with torchaudio).
- ``formant``: synthetic voiced sounds: a glottal harmonic source shaped by moving formants (F1..F3)
  following a digit-specific phoneme plan, with noise for fricatives and bursts for stops; per
  speaker pitch, speed, formant scale and loudness. Sounds like a buzzy vowel robot, and each digit
  is distinct enough for a classifier to learn.
- ``auto`` (default): espeak if installed, else formant.

Each speaker gets a hash-style name (``<8 hex>_nohash_<k>.wav``) as in Speech Commands.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

SAMPLE_RATE = 16000
CLIP = 16000
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Phoneme plans: (kind, F1, F2, F3, relative duration). kind: v voiced vowel/approximant, m nasal
# (weak voiced, low formants), f fricative noise (F2 = noise centre frequency), b stop burst, s silence gap.
PLANS = {
    "zero": [("f", 0, 5000, 0, 0.8), ("v", 300, 2300, 3000, 1.0), ("v", 420, 1300, 1700, 0.8), ("v", 500, 900, 2400, 1.4)],
    "one": [("v", 300, 700, 2200, 0.7), ("v", 620, 1200, 2500, 1.6), ("m", 280, 1400, 2500, 1.0)],
    "two": [("b", 0, 4000, 0, 0.3), ("f", 0, 3500, 0, 0.3), ("v", 320, 900, 2300, 2.2)],
    "three": [("f", 0, 6500, 0, 0.9), ("v", 420, 1300, 1700, 0.6), ("v", 300, 2300, 3000, 1.8)],
    "four": [("f", 0, 7000, 0, 1.0), ("v", 520, 850, 2500, 1.4), ("v", 450, 1250, 1700, 0.9)],
    "five": [("f", 0, 7000, 0, 0.8), ("v", 760, 1300, 2500, 1.2), ("v", 320, 2200, 2900, 0.8), ("f", 0, 2500, 0, 0.4)],
    "six": [("f", 0, 5500, 0, 1.0), ("v", 420, 2000, 2600, 0.9), ("s", 0, 0, 0, 0.3), ("b", 0, 2500, 0, 0.2), ("f", 0, 5500, 0, 0.9)],
    "seven": [("f", 0, 5500, 0, 0.9), ("v", 560, 1800, 2500, 0.9), ("f", 0, 2000, 0, 0.3), ("v", 500, 1500, 2500, 0.6), ("m", 280, 1400, 2500, 0.8)],
    "eight": [("v", 520, 1850, 2500, 1.2), ("v", 350, 2300, 2900, 0.8), ("s", 0, 0, 0, 0.3), ("b", 0, 3500, 0, 0.3)],
    "nine": [("m", 280, 1400, 2500, 0.8), ("v", 760, 1300, 2500, 1.2), ("v", 320, 2200, 2900, 0.7), ("m", 280, 1400, 2500, 0.8)],
}


def _frames(plan, n, rng):
    """Per-sample (F1, F2, F3, voiced amp, noise amp, noise centre) trajectories for ``n`` samples."""
    weights = np.array([p[4] for p in plan], float) * rng.uniform(0.8, 1.25, len(plan))
    bounds = np.concatenate([[0], np.cumsum(weights) / weights.sum() * n]).astype(int)
    tracks = np.zeros((6, n))
    last = None
    for (kind, f1, f2, f3, _), a, b in zip(plan, bounds[:-1], bounds[1:]):
        seg = slice(a, b)
        if kind in "vm":
            target = np.array([f1, f2, f3], float)
            start = target if last is None else last
            ramp = np.minimum(1.0, np.arange(b - a) / max(1, 0.3 * (b - a)))[None, :]
            tracks[:3, seg] = start[:, None] + (target - start)[:, None] * ramp
            tracks[3, seg] = 1.0 if kind == "v" else 0.35
            last = target
        else:
            tracks[:3, seg] = (last if last is not None else np.array([500, 1500, 2500.0]))[:, None]
            if kind == "f":
                tracks[4, seg], tracks[5, seg] = 0.35, f2
            elif kind == "b":
                tracks[4, seg], tracks[5, seg] = 1.0, f2
    return tracks


def formant_digit(digit: str, rng: np.random.Generator, speaker: dict) -> np.ndarray:
    """One synthetic utterance of ``digit`` (float32, <= CLIP samples) for a speaker's voice settings."""
    from scipy.signal import butter, lfilter

    dur = int(CLIP * speaker["speed"] * rng.uniform(0.5, 0.62))
    tracks = _frames(PLANS[digit], dur, rng)
    tracks[:3] *= speaker["formant_scale"]
    t = np.arange(dur) / SAMPLE_RATE
    f0 = speaker["f0"] * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) - 0.1 * t / t[-1])
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = np.zeros(dur)
    for k in range(1, int(7000 / speaker["f0"]) + 1):
        fk = k * f0
        amp = sum(np.exp(-0.5 * ((fk - tracks[i]) / (60 + 40 * i)) ** 2) / (1 + i) for i in range(3))
        voiced += amp * np.sin(k * phase) / np.sqrt(k)
    voiced *= tracks[3]
    noise = np.zeros(dur)
    if tracks[4].any():
        white = rng.standard_normal(dur)
        for centre in np.unique(tracks[5][tracks[4] > 0]):
            lo, hi = max(100.0, centre * 0.7), min(7900.0, centre * 1.3)
            b, a = butter(2, [lo / (SAMPLE_RATE / 2), hi / (SAMPLE_RATE / 2)], btype="band")
            mask = (tracks[5] == centre) & (tracks[4] > 0)
            noise[mask] = lfilter(b, a, white)[mask] * tracks[4][mask]
    envelope = np.minimum(1.0, np.minimum(np.arange(dur), np.arange(dur)[::-1]) / (0.02 * SAMPLE_RATE))
    wave = (voiced / (np.abs(voiced).max() + 1e-9) + 0.6 * noise / (np.abs(noise).max() + 1e-9)) * envelope
    wave = wave / (np.abs(wave).max() + 1e-9) * speaker["loudness"]
    wave += rng.normal(0, 0.002, dur)  # room noise
    out = np.zeros(CLIP if rng.random() > 0.1 else int(rng.integers(CLIP * 3 // 4, CLIP)))
    start = int(rng.integers(0, max(1, len(out) - dur)))
    seg = wave[: len(out) - start]
    out[start:start + len(seg)] = seg
    return np.clip(out, -1, 1).astype(np.float32)


def espeak_digit(digit: str, rng: np.random.Generator, speaker: dict) -> np.ndarray:
    """``digit`` spoken by espeak-ng in the speaker's voice, at 16 kHz, <= CLIP samples."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.wav")
        subprocess.run(["espeak-ng", "-v", speaker["voice"], "-p", str(speaker["pitch"]),
                        "-s", str(speaker["wpm"]), "-w", path, digit], check=True, capture_output=True)
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    wave = torch.from_numpy(data.mean(axis=1))
    if rate != SAMPLE_RATE:
        wave = AF.resample(wave, int(rate), SAMPLE_RATE)
    wave = wave.numpy()[:CLIP]
    wave = wave / (np.abs(wave).max() + 1e-9) * speaker["loudness"]
    out = np.zeros(CLIP, np.float32)
    start = int(rng.integers(0, max(1, CLIP - len(wave))))
    out[start:start + len(wave)] = wave
    return out


def make_speaker(rng: np.random.Generator) -> dict:
    variants = ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4", "klatt", "klatt2"]
    return {"id": f"{int(rng.integers(0, 2 ** 32)):08x}", "f0": float(rng.uniform(85, 260)),
            "speed": float(rng.uniform(0.8, 1.25)), "formant_scale": float(rng.uniform(0.88, 1.15)),
            "loudness": float(rng.uniform(0.3, 0.9)), "voice": f"en+{variants[int(rng.integers(len(variants)))]}",
            "pitch": int(rng.integers(20, 80)), "wpm": int(rng.integers(120, 200))}


def write_demo_speech(out: str, speakers: int = 40, engine: str = "auto", seed: int = 0,
                      progress: bool = True) -> dict:
    """Write the demo folder; returns counts {"train", "val", "test", "engine"}. Each WAV and list file is
    written under a temporary name and renamed (never half-written)."""
    import soundfile as sf
    from tqdm.auto import tqdm

    if engine == "auto":
        engine = "espeak" if shutil.which("espeak-ng") else "formant"
    elif engine == "espeak" and not shutil.which("espeak-ng"):
        raise RuntimeError("demo speech: engine 'espeak' needs the espeak-ng program (apt-get install espeak-ng)")
    elif engine != "formant" and engine != "espeak":
        raise ValueError(f"demo speech: engine must be auto, espeak or formant, got {engine!r}")
    if speakers < 3:
        raise ValueError(f"demo speech: speakers must be >= 3 (train / val / test), got {speakers}")
    speak = espeak_digit if engine == "espeak" else formant_digit
    rng = np.random.default_rng(seed)
    voices = [make_speaker(rng) for _ in range(speakers)]
    n_held = max(1, speakers // 10)
    val_ids = {s["id"] for s in voices[:n_held]}
    test_ids = {s["id"] for s in voices[n_held:2 * n_held]}
    val, test = [], []
    for digit in DIGITS:
        os.makedirs(os.path.join(out, digit), exist_ok=True)
    for speaker in tqdm(voices, desc=f"demo speech ({engine})", disable=not progress):
        for digit in DIGITS:
            rel = f"{digit}/{speaker['id']}_nohash_0.wav"
            final = os.path.join(out, rel)
            tmp = final + f".{os.getpid()}.tmp.wav"
            sf.write(tmp, speak(digit, rng, speaker), SAMPLE_RATE, subtype="PCM_16")
            os.replace(tmp, final)
            if speaker["id"] in val_ids:
                val.append(rel)
            elif speaker["id"] in test_ids:
                test.append(rel)
    for name, rows in (("validation_list.txt", val), ("testing_list.txt", test)):
        tmp = os.path.join(out, f"{name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.writelines(r + "\n" for r in sorted(rows))
        os.replace(tmp, os.path.join(out, name))
    n = speakers * len(DIGITS)
    return {"train": n - len(val) - len(test), "val": len(val), "test": len(test), "engine": engine}
