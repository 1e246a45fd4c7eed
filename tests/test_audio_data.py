"""SC09 data: torchaudio install check, quantisation, the demo speech maker, the layout reader, bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from seqmamba.data.sc09 import (DIGITS, IGNORE_INDEX, AudioFileError, SC09Dataset, dequantize, quantize, read_wav,
                                silence_token)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_torchaudio_imports_and_runs_mu_law_encoding():
    # issue 12: torchaudio 2.11.1 does not load beside torch 2.11.0; the pin must give a working import
    import torchaudio
    import torchaudio.functional as AF

    assert torchaudio.__version__.startswith("2.11.0")
    x = torch.linspace(-1, 1, 9)
    q = AF.mu_law_encoding(x, 256)
    assert q[0] == 0 and q[-1] == 255 and q[4] == 128


@pytest.mark.parametrize("bits,method,tol", [(8, "mu-law", 0.035), (8, "linear", 1 / 255), (12, "linear", 1 / 4095),
                                             (16, "mu-law", 5e-4), (16, "linear", 1 / 65535)])
def test_quantize_round_trip_error_within_one_level(bits, method, tol):
    x = torch.linspace(-1, 1, 10001)
    q = quantize(x, bits, method)
    assert q.min() >= 0 and q.max() < 2 ** bits
    assert (dequantize(q, bits, method) - x).abs().max() <= tol + 1e-6  # half a level (linear) + fp32 round-off


def test_silence_is_the_middle_class_and_bits_are_checked():
    assert silence_token(8, "mu-law") == 128
    with pytest.raises(ValueError, match="8..16"):
        quantize(torch.zeros(3), 7)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sc09demo"))
    subprocess.run([sys.executable, os.path.join(REPO, "data_scripts", "make_demo_speech.py"), "--out", root,
                    "--speakers", "10", "--engine", "formant", "--quiet"], check=True)
    return root


def test_demo_speech_writes_the_sc09_layout(demo):
    for d in DIGITS:
        files = os.listdir(os.path.join(demo, d))
        assert len(files) == 10 and all(f.endswith(".wav") for f in files)
    info = sf.info(os.path.join(demo, "five", os.listdir(os.path.join(demo, "five"))[0]))
    assert info.samplerate == 16000 and info.channels == 1 and info.frames <= 16000
    for name in ("validation_list.txt", "testing_list.txt"):
        assert len(open(os.path.join(demo, name)).read().split()) == 10  # one speaker each


def test_dataset_splits_shift_and_padding_excluded(demo):
    train, val = SC09Dataset(demo, "train", progress=False), SC09Dataset(demo, "val", progress=False)
    assert len(train) == 80 and len(val) == 10 and not set(train.files) & set(val.files)
    idx = list(range(len(train)))
    inputs, targets = train.batch(idx)
    assert inputs.shape == targets.shape == (80, 16000)
    assert (inputs[:, 0] == 128).all() and torch.equal(inputs[:, 1:], train.classes(idx)[:, :-1])
    for i in idx:
        n = int(train.lengths[i])
        assert (targets[i, :n] >= 0).all() and (targets[i, n:] == IGNORE_INDEX).all()
    assert train.n_padded == int((train.lengths < 16000).sum())


def test_resampled_folder_and_linear_16_bit(demo, tmp_path):
    root = tmp_path / "sc09_8k"
    for d in DIGITS:
        (root / d).mkdir(parents=True)
        wave, _ = sf.read(os.path.join(demo, d, sorted(os.listdir(os.path.join(demo, d)))[0]))
        sf.write(str(root / d / "a_nohash_0.wav"), wave[::2], 8000, subtype="PCM_16")
    (root / "validation_list.txt").write_text("zero/a_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("one/a_nohash_0.wav\nbackward/x.wav\n")  # other words are ignored
    with pytest.raises(AudioFileError, match=r"sample rate 8000 Hz, expected 16000 Hz"):
        SC09Dataset(str(root), "train", progress=False)
    data = SC09Dataset(str(root), "train", progress=False, resample=True, bits=16, quantization="linear")
    assert len(data) == 8 and data.vocab_size == 65536 and data.classes([0]).max() < 65536


def _bad_folder(tmp_path, name, writer):
    root = tmp_path / "bad"
    for d in DIGITS:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "validation_list.txt").write_text("")
    (root / "testing_list.txt").write_text("")
    path = root / "three" / name
    writer(str(path))
    return str(root), str(path)


@pytest.mark.parametrize("kind,message", [
    ("stereo", "2 channels, expected mono"),
    ("empty", "empty file"),
    ("no_samples", "no samples"),
    ("truncated", "truncated"),
    ("not_audio", "cannot be read as audio"),
])
def test_bad_wav_gives_one_line_error_naming_the_file(tmp_path, kind, message):
    def write(path):
        if kind == "stereo":
            sf.write(path, np.zeros((1600, 2)), 16000, subtype="PCM_16")
        elif kind == "empty":
            open(path, "wb").close()
        elif kind == "no_samples":
            sf.write(path, np.zeros(0), 16000, subtype="PCM_16")
        elif kind == "truncated":
            sf.write(path, np.zeros(16000), 16000, subtype="PCM_16")
            with open(path, "r+b") as f:
                f.truncate(10000)
        else:
            open(path, "wb").write(b"this is not a wav file at all" * 10)
    root, path = _bad_folder(tmp_path, "x.wav", write)
    with pytest.raises(AudioFileError) as err:
        SC09Dataset(root, "train", progress=False)
    text = str(err.value)
    assert path in text and message in text and "\n" not in text


def test_missing_list_and_missing_listed_file(tmp_path):
    root, _ = _bad_folder(tmp_path, "x.wav", lambda p: sf.write(p, np.zeros(100), 16000))
    (tmp_path / "bad" / "validation_list.txt").write_text("four/gone.wav\n")
    with pytest.raises(AudioFileError, match="lists four/gone.wav"):
        SC09Dataset(root, "val", progress=False)
    os.remove(os.path.join(root, "testing_list.txt"))
    with pytest.raises(AudioFileError, match="testing_list.txt: list file missing"):
        SC09Dataset(root, "train", progress=False)


def test_long_clips_are_trimmed_and_counted(tmp_path):
    root, _ = _bad_folder(tmp_path, "x.wav", lambda p: sf.write(p, np.zeros(20000), 16000))
    with pytest.warns(UserWarning, match="1 of 1 clips longer than 16000"):
        data = SC09Dataset(root, "train", progress=False)
    assert data.n_trimmed == 1 and int(data.lengths[0]) == 16000


def test_read_wav_returns_mono_float(tmp_path):
    path = str(tmp_path / "a.wav")
    sf.write(path, np.full(800, 0.5), 16000, subtype="PCM_16")
    wave = read_wav(path)
    assert wave.dtype == torch.float32 and wave.shape == (800,) and abs(float(wave.mean()) - 0.5) < 1e-3


def test_download_script_extracts_digits_and_lists_from_a_speech_commands_archive(tmp_path):
    import io
    import tarfile

    archive = tmp_path / "speech_commands_v0.02.tar.gz"
    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600), 16000, format="WAV", subtype="PCM_16")
    wav = buf.getvalue()
    with tarfile.open(archive, "w:gz") as tar:
        names = [f"./{d}/a_nohash_0.wav" for d in DIGITS] + ["./backward/b_nohash_0.wav", "./_background_noise_/n.wav"]
        lists = {"./validation_list.txt": b"zero/a_nohash_0.wav\nbackward/b_nohash_0.wav\n",
                 "./testing_list.txt": b"one/a_nohash_0.wav\n"}
        for name, data in [(n, wav) for n in names] + list(lists.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "sc09"
    result = subprocess.run([sys.executable, os.path.join(REPO, "data_scripts", "download_sc09.py"), "--out", str(out),
                             "--archive", str(archive), "--keep-archive"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == sorted(list(DIGITS) + ["testing_list.txt", "validation_list.txt"])
    assert len(SC09Dataset(str(out), "train", progress=False)) == 8  # other words ignored, lists respected
    assert (tmp_path / "speech_commands_v0.02.tar.gz.sha256").is_file()
