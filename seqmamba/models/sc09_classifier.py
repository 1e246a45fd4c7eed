"""SC09 digit classifiers that turn waveforms into features and class probabilities for FID / IS / mIS / AM.

- :class:`MelCNNClassifier`: log-mel spectrogram (torchaudio) -> 4 conv blocks -> global average pool
  -> a 128-d penultimate layer (the FID features) -> 10 logits. Trained by ``seqmamba run
  task=sc09_classifier``; exported as a self-describing file (``sc09_classifier.pt``).
- :class:`ReleasedResNeXt`: the SaShiMi authors' ResNeXt (``resnext.pth``, 98.08 % SC09 test accuracy;
  ``data_scripts/download_sc09_classifier.py``) behind its own front end (32-band mel, power in dB
  relative to the clip's maximum, as pytorch-speech-commands computes it with librosa). The file is a
  pickled module; unpickling needs the ``models`` package of tugstugi/pytorch-speech-commands on
  PYTHONPATH. Features = the input of its ``classifier`` layer, as the SaShiMi evaluation takes them.

Both: ``features(wave (B, samples)) -> (B, D)``, ``forward(wave) -> logits (B, 10)``,
``probs_and_features(wave)``. :func:`load_sc09_classifier` opens any of the accepted files.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import BACKBONES

KIND = "sc09_mel_cnn"


@BACKBONES.register("sc09_mel_cnn")
class MelCNNClassifier(nn.Module):
    def __init__(self, n_classes: int = 10, sample_rate: int = 16000, n_mels: int = 64, n_fft: int = 480,
                 hop_length: int = 160, channels: Sequence[int] = (32, 64, 128, 128), feature_dim: int = 128,
                 dropout: float = 0.1):
        super().__init__()
        import torchaudio

        self.config = {"n_classes": n_classes, "sample_rate": sample_rate, "n_mels": n_mels, "n_fft": n_fft,
                       "hop_length": hop_length, "channels": list(channels), "feature_dim": feature_dim,
                       "dropout": dropout}
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                                        n_mels=n_mels)
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.penultimate = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, feature_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(feature_dim, n_classes)

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 1, n_mels, frames) log-mel, normalised per clip (loudness-invariant)."""
        if wave.dim() != 2:
            raise ValueError(f"classifier: wave has shape {tuple(wave.shape)}, expected (batch, samples)")
        need = 2 ** len(self.config["channels"])  # frames and mel bands halve at every conv block
        frames = wave.shape[-1] // self.config["hop_length"] + 1
        if frames < need or self.config["n_mels"] < need:
            raise ValueError(f"classifier: clips of {wave.shape[-1]} samples give {frames} frames; this network's "
                             f"{len(self.config['channels'])} pooling blocks need >= {need} frames and mel bands "
                             f"(>= {(need - 1) * self.config['hop_length']} samples)")
        spec = torch.log(self.mel(wave.float()) + 1e-6)
        spec = (spec - spec.mean(dim=(1, 2), keepdim=True)) / (spec.std(dim=(1, 2), keepdim=True) + 1e-5)
        return spec[:, None]

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.penultimate(self.conv(self.spectrogram(wave)).mean(dim=(2, 3)))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(wave))

    @torch.no_grad()
    def probs_and_features(self, wave: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(wave)
        return F.softmax(self.classifier(feats).float(), dim=-1), feats.float()

    def export(self, path: str) -> None:
        """Write a self-describing file that :func:`load_sc09_classifier` reads (atomically)."""
        from seqmamba.atomic_write import atomic_open

        with atomic_open(path, "wb") as f:
            torch.save({"kind": KIND, "config": self.config, "state_dict": self.state_dict()}, f)


class ReleasedResNeXt(nn.Module):
    """The SaShiMi release's pickled ResNeXt behind a 32-band mel front end (pytorch-speech-commands')."""

    def __init__(self, network: nn.Module, sample_rate: int = 16000):
        super().__init__()
        import torchaudio

        self.network = network.module if hasattr(network, "module") else network
        if not isinstance(getattr(self.network, "classifier", None), nn.Module):
            raise ValueError("the ResNeXt checkpoint has no 'classifier' layer; is it the SaShiMi release's resnext.pth?")
        # librosa.feature.melspectrogram defaults: n_fft 2048, hop 512, Slaney mel scale and norm, power 2
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=2048, hop_length=512, n_mels=32,
                                                        norm="slaney", mel_scale="slaney")

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        power = self.mel(wave.float())
        db = 10 * torch.log10(power.clamp(min=1e-10))
        db = db - db.amax(dim=(1, 2), keepdim=True)  # librosa.power_to_db(ref=np.max)
        return db.clamp(min=-80.0)[:, None]  # top_db = 80

    def _run(self, wave: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        captured: Dict[str, torch.Tensor] = {}
        handle = self.network.classifier.register_forward_hook(lambda m, i, o: captured.__setitem__("x", i[0]))
        try:
            logits = self.network(self.spectrogram(wave))
        finally:
            handle.remove()
        return logits, captured["x"]

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return self._run(wave)[1]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self._run(wave)[0]

    @torch.no_grad()
    def probs_and_features(self, wave: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self._run(wave)
        return F.softmax(logits.float(), dim=-1), feats.float()


def load_sc09_classifier(path: str, device: Any = "cpu") -> nn.Module:
    """A classifier in eval mode from: an exported ``sc09_classifier.pt``; a ``seqmamba run
    task=sc09_classifier`` checkpoint (``checkpoints/best.pt``, built with the default MelCNN settings unless
    the run directory holds the export); or the released ``resnext.pth``."""
    if not path or not os.path.isfile(str(path)):
        raise FileNotFoundError(f"SC09 classifier {path!r} not found; train one with 'seqmamba run task=sc09_classifier' "
                                f"or fetch the released one with data_scripts/download_sc09_classifier.py")
    path = str(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickled module (the ResNeXt release) is not loadable with weights_only
        if os.path.basename(path).startswith("resnext"):
            try:
                network = torch.load(path, map_location="cpu", weights_only=False)
            except ModuleNotFoundError as missing:
                raise RuntimeError(f"{path}: the released ResNeXt is a pickled module; put the 'models' package of "
                                   f"github.com/tugstugi/pytorch-speech-commands on PYTHONPATH ({missing})") from None
            return ReleasedResNeXt(network.float()).to(device).eval()
        try:  # a trainer checkpoint also holds RNG / optimizer state that weights_only refuses
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:
            raise RuntimeError(f"{path}: not an SC09 classifier file ({str(err).splitlines()[0]})") from None
    if isinstance(blob, Mapping) and blob.get("kind") == KIND:
        model = MelCNNClassifier(**blob["config"])
        model.load_state_dict(blob["state_dict"])
    elif isinstance(blob, Mapping) and isinstance(blob.get("model"), Mapping):
        export = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "sc09_classifier.pt")
        if os.path.isfile(export):
            return load_sc09_classifier(export, device)
        model = MelCNNClassifier()
        try:
            model.load_state_dict(blob["model"])
        except RuntimeError as err:
            raise RuntimeError(f"{path}: weights do not fit the default MelCNN classifier "
                               f"({str(err).splitlines()[0]}); pass its exported sc09_classifier.pt") from None
    else:
        raise RuntimeError(f"{path}: not an SC09 classifier file (expected kind={KIND!r} or a trainer checkpoint)")
    return model.to(device).eval()
