"""SC09 (spoken digits zero..nine of Speech Commands v0.02) as token sequences for autoregressive audio.

Layout (what ``data_scripts/download_sc09.py`` and ``make_demo_speech.py`` write)::

    root/zero/*.wav ... root/nine/*.wav
    root/validation_list.txt   root/testing_list.txt   (lines "zero/abc_nohash_0.wav", relative to root)

The train split is every digit WAV on neither list (the official Speech Commands rule). List lines of
other words (the full Speech Commands lists) are ignored; a listed digit file that is missing is an error.

Audio: WAV read with soundfile, mono, ``sample_rate`` Hz (another rate is an error unless ``resample``,
then torchaudio resamples), padded or trimmed to ``clip_length`` samples. Padding is excluded from the
loss (target -100); trimmed clips are counted and reported. Quantisation: mu-law (torchaudio) or linear,
8 to 16 bits; the vocabulary is 2**bits. Sequences: ``inputs = [silence] + q[:-1]``, ``targets = q``.
"""
from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..registry import DATASETS

IGNORE_INDEX = -100
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "val", "test")
QUANTIZATIONS = ("mu-law", "linear")


class AudioFileError(ValueError):
    """A WAV or list file that cannot be used; ``str()`` is one line naming the file."""


# ------------------------------------------------------------------------------------ quantisation
def _check_bits(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or not 8 <= int(bits) <= 16:
        raise ValueError(f"quantisation bits must be an int in 8..16, got {bits!r}")
    return int(bits)


def quantize(wave: torch.Tensor, bits: int = 8, method: str = "mu-law") -> torch.Tensor:
    """Float waveform in [-1, 1] -> LongTensor of classes in [0, 2**bits). mu-law via torchaudio."""
    bits = _check_bits(bits)
    levels = 2 ** bits
    wave = wave.float().clamp(-1.0, 1.0)
    if method == "mu-law":
        import torchaudio.functional as AF

        return AF.mu_law_encoding(wave, levels).long()
    if method == "linear":
        return ((wave + 1.0) * 0.5 * (levels - 1)).round().long().clamp(0, levels - 1)
    raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {method!r}")


def dequantize(tokens: torch.Tensor, bits: int = 8, method: str = "mu-law") -> torch.Tensor:
    """Classes in [0, 2**bits) -> float waveform in [-1, 1] (inverse of :func:`quantize`)."""
    bits = _check_bits(bits)
    levels = 2 ** bits
    tokens = tokens.long().clamp(0, levels - 1)
    if method == "mu-law":
        import torchaudio.functional as AF

        return AF.mu_law_decoding(tokens, levels).float()
    if method == "linear":
        return tokens.float() / (levels - 1) * 2.0 - 1.0
    raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {method!r}")


def silence_token(bits: int = 8, method: str = "mu-law") -> int:
    """The class of 0.0 (the start token and the padding input)."""
    return int(quantize(torch.zeros(1), bits, method)[0])


# ------------------------------------------------------------------------------------ WAV reading
def _riff_data_truncated(path: str) -> Optional[str]:
    """A reason when a RIFF/WAVE file's data chunk claims more bytes than the file holds, else None.
    (libsndfile reads a truncated file's remaining frames without complaint.)"""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # not RIFF: soundfile decides
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if pos + 8 + chunk_size > size:
                    return f"truncated: the data chunk declares {chunk_size} bytes, the file holds {size - pos - 8}"
                return None
            pos += 8 + chunk_size + (chunk_size & 1)
    return "no data chunk (truncated header?)"


def read_wav(path: str, sample_rate: int = 16000, resample: bool = False) -> torch.Tensor:
    """Mono float32 waveform (samples,) at ``sample_rate``; bad files raise AudioFileError naming the file."""
    import soundfile as sf

    if not os.path.isfile(path):
        raise AudioFileError(f"{path}: no such WAV file")
    if os.path.getsize(path) == 0:
        raise AudioFileError(f"{path}: empty file (0 bytes), expected a mono {sample_rate} Hz WAV")
    reason = _riff_data_truncated(path)
    if reason:
        raise AudioFileError(f"{path}: {reason}; re-download or delete it")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's errors name the problem, not always the file
        raise AudioFileError(f"{path}: cannot be read as audio ({str(err).splitlines()[0]})") from None
    if data.shape[1] != 1:
        raise AudioFileError(f"{path}: {data.shape[1]} channels, expected mono (1 channel); "
                             f"down-mix it, e.g. sox in.wav -c 1 out.wav")
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: no samples (empty audio), expected a mono {sample_rate} Hz clip")
    wave = torch.from_numpy(np.ascontiguousarray(data[:, 0]))
    if rate != sample_rate:
        if not resample:
            raise AudioFileError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz "
                                 f"(set dataset.resample=true to resample with torchaudio)")
        import torchaudio.functional as AF

        wave = AF.resample(wave, int(rate), int(sample_rate))
    return wave


def fit_length(wave: torch.Tensor, length: int) -> Tuple[torch.Tensor, int, bool]:
    """(wave padded with zeros / trimmed to ``length``, number of real samples, trimmed?)."""
    n = int(wave.shape[0])
    if n >= length:
        return wave[:length], length, n > length
    return torch.cat([wave, wave.new_zeros(length - n)]), n, False


# ------------------------------------------------------------------------------------ layout
def _read_list(root: str, name: str) -> List[str]:
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        raise AudioFileError(f"{path}: list file missing; an SC09 folder needs validation_list.txt and "
                             f"testing_list.txt (data_scripts/download_sc09.py or make_demo_speech.py write them)")
    entries = []
    with open(path) as f:
        for line in f:
            line = line.strip().replace("\\", "/")
            if line and line.split("/")[0] in DIGITS:
                entries.append(line)
    return entries


def split_files(root: str, split: str) -> List[str]:
    """Relative paths ("zero/x.wav") of ``split`` in an SC09 folder, sorted."""
    if split not in SPLITS:
        raise ValueError(f"SC09 split must be one of {SPLITS}, got {split!r}")
    if not os.path.isdir(root):
        raise AudioFileError(f"{root}: SC09 root folder not found (set dataset.root=<folder with zero/ .. nine/>)")
    missing_dirs = [d for d in DIGITS if not os.path.isdir(os.path.join(root, d))]
    if missing_dirs:
        raise AudioFileError(f"{root}: digit folders missing: {', '.join(missing_dirs)} (expected zero/ .. nine/)")
    val = _read_list(root, "validation_list.txt")
    test = _read_list(root, "testing_list.txt")
    if split == "train":
        held_out = set(val) | set(test)
        files = [f"{d}/{name}" for d in DIGITS for name in sorted(os.listdir(os.path.join(root, d)))
                 if name.lower().endswith(".wav") and f"{d}/{name}" not in held_out]
    else:
        files = sorted(val if split == "val" else test)
        list_name = "validation_list.txt" if split == "val" else "testing_list.txt"
        for rel in files:
            if not os.path.isfile(os.path.join(root, rel)):
                raise AudioFileError(f"{os.path.join(root, list_name)}: lists {rel}, which is not in {root}")
    if not files:
        raise AudioFileError(f"{root}: the {split} split has no digit WAV files")
    return files


@dataclass
class SC09Config:
    root: str
    bits: int = 8
    quantization: str = "mu-law"
    sample_rate: int = 16000
    clip_length: int = 16000
    resample: bool = False


@DATASETS.register("sc09")
class SC09Dataset:
    """One split of an SC09 folder, loaded into memory as quantised clips.

    ``tokens`` (N, clip_length) integer classes, ``lengths`` (N,) real samples per clip, ``labels`` (N,)
    digit 0..9, ``files`` the relative paths. ``batch(indices)`` gives ``(inputs, targets)``.
    ``max_clips`` keeps the first clips of a seeded permutation (quick evaluation; reported).
    """

    def __init__(self, root: str, split: str = "train", bits: int = 8, quantization: str = "mu-law",
                 sample_rate: int = 16000, clip_length: int = 16000, resample: bool = False,
                 max_clips: Optional[int] = None, progress: bool = True, seed: int = 0):
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"dataset.quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        self.bits = _check_bits(bits)
        if clip_length < 2:
            raise ValueError(f"dataset.clip_length must be >= 2, got {clip_length}")
        self.root, self.split, self.quantization = root, split, quantization
        self.sample_rate, self.clip_length = int(sample_rate), int(clip_length)
        self.vocab_size = 2 ** self.bits
        self.silence = silence_token(self.bits, quantization)
        files = split_files(root, split)
        if max_clips is not None and max_clips < len(files):
            order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:max_clips]
            files = [files[i] for i in sorted(order.tolist())]
        self.files = files
        # smallest integer type holding 2**bits classes (uint8 for the usual 8 bits: SC09 train is ~500 MB)
        # (16 bits are stored shifted by -32768 to fit int16)
        store = torch.uint8 if self.bits == 8 else torch.int16
        self._offset = 2 ** 15 if self.bits == 16 else 0
        self.tokens = torch.empty(len(files), self.clip_length, dtype=store)
        self.lengths = torch.empty(len(files), dtype=torch.long)
        self.labels = torch.tensor([DIGITS.index(f.split("/")[0]) for f in files], dtype=torch.long)
        trimmed = 0
        from tqdm.auto import tqdm

        for i, rel in enumerate(tqdm(files, desc=f"SC09 {split}", disable=not progress, leave=False)):
            wave = read_wav(os.path.join(root, rel), self.sample_rate, resample)
            wave, n, cut = fit_length(wave, self.clip_length)
            trimmed += cut
            q = quantize(wave, self.bits, quantization)
            q[n:] = self.silence
            self.tokens[i] = (q - self._offset).to(store)
            self.lengths[i] = n
        self.n_trimmed = trimmed
        self.n_padded = int((self.lengths < self.clip_length).sum())
        if trimmed:
            warnings.warn(f"SC09 {split}: {trimmed} of {len(files)} clips longer than {self.clip_length} samples "
                          f"were trimmed to {self.clip_length}", stacklevel=2)

    def __len__(self) -> int:
        return len(self.files)

    def waveforms(self, indices: Optional[Sequence[int]] = None) -> torch.Tensor:
        """(n, clip_length) float waveforms of the quantised clips (padding = silence)."""
        idx = torch.arange(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        return dequantize(self.classes(idx), self.bits, self.quantization)

    def classes(self, indices) -> torch.Tensor:
        """(n, clip_length) LongTensor of the quantised classes of clips ``indices``."""
        return self.tokens[torch.as_tensor(indices, dtype=torch.long)].long() + self._offset

    def batch(self, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) LongTensors (B, clip_length): inputs = [silence] + q[:-1]; padding targets = -100."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        q = self.classes(idx)
        targets = q.clone()
        positions = torch.arange(self.clip_length)
        targets[positions[None, :] >= self.lengths[idx][:, None]] = IGNORE_INDEX
        inputs = torch.cat([torch.full((len(idx), 1), self.silence, dtype=torch.long), q[:, :-1]], dim=1)
        return inputs, targets


def ensure_demo_folder(root: str, speakers: int = 3, seed: int = 0) -> str:
    """``root`` if it exists, else a demo-speech folder written there (built under a temporary name and
    renamed, so concurrent callers never see half a folder). For tests and zero-setup trials."""
    if os.path.isdir(root):
        return root
    import shutil
    import tempfile

    from .demo_speech import write_demo_speech

    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sc09_demo_", dir=parent)
    write_demo_speech(tmp, speakers=speakers, engine="formant", seed=seed, progress=False)
    try:
        os.rename(tmp, root)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return root
