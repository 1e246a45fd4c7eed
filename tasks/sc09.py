"""SC09 autoregressive speech: next-sample prediction over quantised audio, sampling to WAV, FID / IS / mIS / AM.

Data: an SC09-layout folder (``dataset.root``; the real one from data_scripts/download_sc09.py, or
data_scripts/make_demo_speech.py's offline stand-in), read by :class:`seqmamba.data.sc09.SC09Dataset`:
16 kHz mono clips padded / trimmed to ``dataset.clip_length`` samples, 8-bit mu-law by default
(``dataset.bits`` 8..16, ``dataset.quantization`` mu-law | linear), padding excluded from the loss.
Batches: ``inputs = [silence] + q[:-1]``, ``targets = q``; ``task.train_crop`` > 0 trains on random
windows of that many samples (starts aligned to ``task.crop_align``), for quick CPU runs.

Metrics (``val/*``): NextTokenTask's, plus ``bits_per_sample`` = loss / ln 2 (uniform baseline: ``bits``).

Verbs:
- ``seqmamba generate task=sc09 ckpt=... n_samples=N``: N clips sampled recurrently from the start
  (silence) token, written as 16 kHz mono PCM16 WAVs of ``generate.max_new_tokens`` samples plus
  ``spectrograms.png`` (a grid of the first 16).
- ``seqmamba eval task=sc09 ckpt=...``: the val NLL, then (if ``task.classifier`` is set) FID / IS / mIS /
  AM of ``task.eval_samples`` generated clips against the train split's classifier statistics, with the
  test split scored the same way as the reference row ("test_set"). Written to ``<out>/audio_metrics.json``.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from seqmamba.atomic_write import atomic_open
from seqmamba.config_checks import check_choice, check_int, config_get
from seqmamba.data.sc09 import SC09Dataset, dequantize, ensure_demo_folder, silence_token
from seqmamba.models import sashimi as _sashimi  # noqa: F401  (registers BACKBONES "sashimi")
from seqmamba.registry import TASKS

from .base import model_device
from .next_token import NextTokenTask


def dataset_from_cfg(cfg: Mapping, split: str, max_clips: Optional[int] = None, bits: Optional[int] = None,
                     quantization: Optional[str] = None) -> SC09Dataset:
    """The ``split`` of the folder ``dataset.root`` with the config's audio settings."""
    root = config_get(cfg, "dataset.root", None)
    if not root:
        raise ValueError("dataset.root is not set: give the SC09 folder, e.g. dataset.root=data/sc09 "
                         "(make one offline with: python data_scripts/make_demo_speech.py --out data/sc09_demo)")
    root = os.path.expanduser(str(root))
    if config_get(cfg, "dataset.make_demo", False):
        root = ensure_demo_folder(root)
    return SC09Dataset(
        root, split,
        bits=int(bits if bits is not None else config_get(cfg, "dataset.bits", 8)),
        quantization=str(quantization or config_get(cfg, "dataset.quantization", "mu-law")),
        sample_rate=int(config_get(cfg, "dataset.sample_rate", 16000)),
        clip_length=int(config_get(cfg, "dataset.clip_length", 16000)),
        resample=bool(config_get(cfg, "dataset.resample", False)),
        max_clips=max_clips, progress=bool(config_get(cfg, "trainer.progress", True)),
        seed=int(config_get(cfg, "task.val_seed", 1234)))


def train_stream(dataset: SC09Dataset, batch_size: int, seed: int, start_step: int, rank: int, micro_batches: int,
                 make_batch):
    """Infinite batches; micro-batch m of step s on rank r draws from Generator(seed, s, r, m) only."""
    step = start_step
    while True:
        for micro in range(micro_batches):
            g = torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1009 + rank) * 101 + micro)
            idx = torch.randint(len(dataset), (batch_size,), generator=g)
            yield make_batch(idx, g)
        step += 1


def write_wavs(waves: Sequence[np.ndarray], out_dir: str, sample_rate: int, prefix: str = "sample") -> List[str]:
    """16-bit PCM mono WAVs, each written to a temp name and renamed (never half-written)."""
    import soundfile as sf

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, wave in enumerate(waves):
        path = os.path.join(out_dir, f"{prefix}_{i:04d}.wav")
        tmp = path + ".tmp.wav"
        sf.write(tmp, np.clip(np.asarray(wave, np.float32), -1, 1), sample_rate, subtype="PCM_16")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def spectrogram_grid(waves: Sequence[np.ndarray], path: str, sample_rate: int, titles=None, max_panels: int = 16) -> str:
    """A PNG grid of log-mel spectrograms (torchaudio) of the first ``max_panels`` clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torchaudio

    waves = list(waves)[:max_panels]
    cols = min(4, len(waves))
    rows = math.ceil(len(waves) / cols)
    shortest = min(len(w) for w in waves)
    n_fft = min(512, 2 ** int(math.log2(max(4, shortest - 1))))  # short clips: a shorter window (stft pads n_fft/2)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4,
                                               n_mels=min(64, n_fft // 4))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(waves):
            spec = torch.log10(mel(torch.as_tensor(np.asarray(waves[i]), dtype=torch.float32)) + 1e-6)
            ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma")
            ax.set_title(titles[i] if titles else f"#{i}", fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return path


@torch.no_grad()
def classifier_outputs(classifier, waves: torch.Tensor, batch_size: int = 256, desc: str = "classify"):
    """(probs (N, 10), features (N, D)) numpy arrays of float waveforms (N, samples)."""
    from tqdm.auto import tqdm

    device = next(classifier.parameters()).device
    probs, feats = [], []
    for start in tqdm(range(0, len(waves), batch_size), desc=desc, leave=False):
        p, f = classifier.probs_and_features(waves[start:start + batch_size].to(device))
        probs.append(p.cpu().double().numpy())
        feats.append(f.cpu().double().numpy())
    return np.concatenate(probs), np.concatenate(feats)


@TASKS.register("sc09")
class SC09Task(NextTokenTask):
    def __init__(self, cfg: Mapping):
        super().__init__(cfg)
        self.bits = check_int("dataset.bits", config_get(cfg, "dataset.bits", 8), minimum=8, maximum=16)
        self.quantization = check_choice("dataset.quantization", config_get(cfg, "dataset.quantization", "mu-law"),
                                         ["mu-law", "linear"])
        self.vocab_size = 2 ** self.bits
        self.bos_token_id = silence_token(self.bits, self.quantization)
        self.sample_rate = int(config_get(cfg, "dataset.sample_rate", 16000))
        self.seed = check_int("seed", config_get(cfg, "seed", 0), minimum=0)
        self.batch_size = check_int("trainer.batch_size", config_get(cfg, "trainer.batch_size", 8), minimum=1)
        self.micro_batches = check_int("trainer.grad_accum_steps", config_get(cfg, "trainer.grad_accum_steps", 1), 1)
        self.train_crop = check_int("task.train_crop", config_get(cfg, "task.train_crop", 0), minimum=0)
        self.crop_align = check_int("task.crop_align", config_get(cfg, "task.crop_align", 16), minimum=1)
        self._splits: Dict[str, SC09Dataset] = {}

    def split(self, name: str) -> SC09Dataset:
        if name not in self._splits:
            limit = config_get(self.cfg, f"task.max_{name}_clips", None)
            self._splits[name] = dataset_from_cfg(self.cfg, name, None if limit is None else int(limit))
        return self._splits[name]

    # -- data ----------------------------------------------------------------------------------
    def _train_batch(self, idx: torch.Tensor, g: torch.Generator):
        inputs, targets = self.split("train").batch(idx)
        crop = self.train_crop
        if 0 < crop < inputs.shape[1]:
            slots = (inputs.shape[1] - crop) // self.crop_align + 1
            start = int(torch.randint(slots, (1,), generator=g)) * self.crop_align
            inputs, targets = inputs[:, start:start + crop], targets[:, start:start + crop]
        return inputs, targets

    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1):
        return train_stream(self.split("train"), self.batch_size, self.seed, start_step, rank, self.micro_batches,
                            self._train_batch)

    def val_sets(self) -> Dict[str, Sequence]:
        data = self.split("val")
        bs = check_int("task.val_batch_size", config_get(self.cfg, "task.val_batch_size", 16), minimum=1)
        return {"val": [data.batch(range(s, min(s + bs, len(data)))) for s in range(0, len(data), bs)]}

    def reduce_metrics(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        metrics = super().reduce_metrics(sums)
        metrics["bits_per_sample"] = metrics["bits_per_token"]
        return metrics

    # -- generation ----------------------------------------------------------------------------
    def sample(self, model, prompt: torch.Tensor, max_new_tokens: int, generator: torch.Generator) -> torch.Tensor:
        settings = self.sampling_settings()
        settings.pop("cg", None)
        settings["eos_token_id"] = None  # audio has no end token: every clip gets its full length
        return model.generate(prompt, max_new_tokens, generator=generator, **settings)

    def decode_samples(self, ids: torch.Tensor) -> List[np.ndarray]:
        """Generated ids (rows, 1 + T) -> float waveforms of T samples (the start token dropped)."""
        waves = dequantize(ids[:, 1:].cpu(), self.bits, self.quantization)
        return [w.numpy() for w in waves]

    def write_samples(self, samples: List[np.ndarray], out_dir: str) -> List[str]:
        paths = write_wavs(samples, out_dir, self.sample_rate)
        paths.append(spectrogram_grid(samples, os.path.join(out_dir, "spectrograms.png"), self.sample_rate))
        return paths

    @torch.no_grad()
    def generate_waves(self, model, n: int, length: int, batch_size: int, seed: int) -> torch.Tensor:
        """(n, length) float waveforms sampled from the start token."""
        device = model_device(model)
        generator = torch.Generator(device=device).manual_seed(seed)
        out = []
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            prompt = torch.full((rows, 1), self.bos_token_id, dtype=torch.long, device=device)
            out.append(dequantize(self.sample(model, prompt, length, generator)[:, 1:].cpu(), self.bits,
                                  self.quantization))
        return torch.cat(out)

    # -- evaluation ------------------------------------------------------------------------------
    def eval_checkpoint(self, model, out_dir: str) -> Dict[str, Any]:
        from seqmamba.train.distributed import get_rank

        results: Dict[str, Any] = super().eval_checkpoint(model, out_dir)
        classifier_path = config_get(self.cfg, "task.classifier", None)
        if not classifier_path:
            print("sc09 eval: task.classifier is not set, so FID / IS / mIS / AM are skipped "
                  "(train one: seqmamba run task=sc09_classifier dataset.root=...)")
            return results
        if get_rank() != 0:
            return results
        results.update(self.sample_metrics(model, str(classifier_path), out_dir))
        return results

    def sample_metrics(self, model, classifier_path: str, out_dir: str) -> Dict[str, Any]:
        """FID / IS / mIS / AM of generated clips and of the test split, against the train split."""
        from seqmamba.metrics import score_samples
        from seqmamba.models.sc09_classifier import load_sc09_classifier

        device = model_device(model)
        classifier = load_sc09_classifier(classifier_path, device)
        n = check_int("task.eval_samples", config_get(self.cfg, "task.eval_samples", 64), minimum=2)
        length = int(config_get(self.cfg, "dataset.clip_length", 16000))
        bs = check_int("task.eval_batch_size", config_get(self.cfg, "task.eval_batch_size", 64), minimum=1)
        train, test = self.split("train"), self.split("test")
        ref_p, ref_f = classifier_outputs(classifier, train.waveforms(), desc="classify train")
        test_p, test_f = classifier_outputs(classifier, test.waveforms(), desc="classify test")
        was_training = model.training
        model.eval()
        try:
            waves = self.generate_waves(model, n, length, bs, int(config_get(self.cfg, "seed", 0)))
        finally:
            model.train(was_training)
        gen_p, gen_f = classifier_outputs(classifier, waves, desc="classify samples")
        scores = {"samples": score_samples(ref_f, ref_p, gen_f, gen_p).as_dict(),
                  "test_set": score_samples(ref_f, ref_p, test_f, test_p).as_dict(),
                  "classifier": classifier_path, "reference": f"train split ({len(train)} clips)"}
        sample_dir = os.path.join(out_dir, "eval_samples")
        write_wavs([w.numpy() for w in waves[:8]], sample_dir, self.sample_rate)
        spectrogram_grid([w.numpy() for w in waves], os.path.join(sample_dir, "spectrograms.png"), self.sample_rate)
        os.makedirs(out_dir, exist_ok=True)
        with atomic_open(os.path.join(out_dir, "audio_metrics.json")) as f:
            json.dump(scores, f, indent=2)
        return scores
