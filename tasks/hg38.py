"""HG38 pretraining: next-base prediction on windows of a FASTA (Mamba paper section 4.3, Figure 5).

Data (``dataset.*``, DATASETS "fasta_intervals"): ``fasta`` (any FASTA; null = the demo genomes,
made under ``dataset.demo_dir`` on first use), ``bed`` (Basenji format ``chrom start end split``;
null = tile the FASTA, split by chromosome), ``seq_len`` (the context L), ``max_n_fraction``,
``val_chroms`` / ``test_chroms`` / ``val_fraction`` (BED-less splits). See seqmamba/data/fasta.py.

Batch: ``inputs = [BOS] + window[:-1]``, ``targets = window``: every one of the L bases is scored,
each from the bases before it. Targets at N bases are -100 (ignored; counted as ``n_bases_masked``);
windows with more than ``max_n_fraction`` N are redrawn (training) or left out (validation), counted.

Config the task owns (``task.*``): ``rc_prob`` [0.0: reverse-complement probability per training
window], ``val_windows`` [max windows in the fixed validation set, evenly spaced over the valid
split], ``val_batch_size``, ``constant_tokens_per_batch`` [true: under ``trainer.seq_len_warmup`` the
batch grows as the length shrinks so batch x length stays ``trainer.batch_size x dataset.seq_len``,
the paper's warmup], ``embed`` (the ``seqmamba embed`` settings: input, bed, pooling, rc_average,
batch_size, chunk_len, format).

Metrics: loss (nats/base), acc, ppl, bits_per_base, and beside them ``base_freq_ppl``: the
perplexity of the 0th-order model (base frequencies fitted on the same validation set, the best any
context-free model can do there). A model that learned context sits below it.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from seqmamba.atomic_write import atomic_open
from seqmamba.config_checks import as_plain_dict, check_choice, check_float, check_int, config_get
from seqmamba.data.dna_tokenizer import BOS, EOS, N, VOCAB_SIZE, A, DNATokenizer, reverse_complement_ids
from seqmamba.data.fasta import FastaIntervalDataset
from seqmamba.data.streams import TRAIN_STREAM, seeded_generator
from seqmamba.registry import DATASETS, TASKS

from .next_token import IGNORE_INDEX, NextTokenTask

MAX_REDRAWS = 1000


def resolve_demo_paths(cfg: Mapping, keys: Sequence[str]) -> Dict[str, Any]:
    """``dataset.*`` as a plain dict; where every key in ``keys`` is null, the demo genomes' paths
    (made under ``dataset.demo_dir`` if missing)."""
    params = as_plain_dict(config_get(cfg, "dataset", {}))
    demo_dir = params.pop("demo_dir", "data/demo")
    if all(not params.get(k) for k in keys[:1]):
        from seqmamba.data.demo_genomes import ensure_demo_genomes

        paths = ensure_demo_genomes(str(demo_dir))
        for k in keys:
            if not params.get(k):
                params[k] = paths[k]
    return params


def window_batch(windows: Sequence[np.ndarray], mask_n: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token windows (uint8, equal lengths) -> (inputs [BOS] + w[:-1], targets w with N -> -100)."""
    ids = torch.from_numpy(np.stack(windows).astype(np.int64))
    inputs = torch.cat([torch.full((ids.shape[0], 1), BOS, dtype=torch.long), ids[:, :-1]], dim=1)
    targets = ids.clone()
    if mask_n:
        targets[targets == N] = IGNORE_INDEX
    return inputs, targets


def base_frequency_ppl(batches: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Perplexity of the 0th-order model whose base frequencies are fitted on these targets."""
    counts = torch.zeros(VOCAB_SIZE, dtype=torch.float64)
    for _, targets in batches:
        t = targets[targets != IGNORE_INDEX]
        counts += torch.bincount(t, minlength=VOCAB_SIZE).double()
    p = counts[counts > 0] / counts.sum()
    return float(torch.exp(-(p * p.log()).sum()))


# -- embeddings (`seqmamba embed`) -----------------------------------------------------------------
def _feature_model(model: nn.Module) -> nn.Module:
    """The module whose ``features(ids, inference_params=...)`` runs recurrently (a classifier's backbone)."""
    backbone = getattr(model, "backbone", None)
    return backbone if hasattr(model, "head") and backbone is not None else model


@torch.no_grad()
def chunked_features(model: nn.Module, input_ids: torch.Tensor, chunk_len: int) -> torch.Tensor:
    """``model.features(input_ids)`` computed ``chunk_len`` tokens at a time, the SSM and conv states
    carried across chunks (``seqmamba.models.chunked``): equal to one full pass up to float rounding."""
    if input_ids.shape[1] <= chunk_len:
        return model.features(input_ids)
    from seqmamba.models.chunked import chunked_features as backbone_chunked

    return backbone_chunked(_feature_model(model), input_ids, chunk_len)


@torch.no_grad()
def pooled_features(model: nn.Module, input_ids: torch.Tensor, chunk_len: int, pooling: str) -> torch.Tensor:
    """(batch, d_model) mean- or last-pooled features; sequences longer than ``chunk_len`` are pooled
    chunk by chunk, so only one chunk's features are ever in memory."""
    if input_ids.shape[1] <= chunk_len:
        return _pool(model.features(input_ids), pooling)
    from seqmamba.models.chunked import iter_chunked_features

    total = last = None
    for _, out in iter_chunked_features(_feature_model(model), input_ids, chunk_len):
        part = out.float().sum(dim=1)
        total = part if total is None else total + part
        last = out[:, -1]
    return total / input_ids.shape[1] if pooling == "mean" else last


def read_embedding_inputs(input_path: str, bed: Optional[str], fasta: Optional[str]) -> List[Tuple[str, str]]:
    """(name, sequence) pairs: every record of a FASTA, or every BED interval of a FASTA
    (``name = chrom:start-end``; a 4th BED column other than a split name is used as the name)."""
    from seqmamba.data.fasta import SPLIT_ALIASES, open_fasta

    if not input_path:
        raise ValueError("seqmamba embed needs task.embed.input=<FASTA or BED> (a BED also needs task.embed.fasta "
                         "or dataset.fasta)")
    if str(input_path).endswith((".bed", ".bed.gz")) or bed:
        bed_path = bed or input_path
        fasta_path = fasta if bed else fasta
        if not fasta_path:
            raise ValueError(f"task.embed.input={input_path!r} is a BED: give the FASTA it refers to with "
                             f"task.embed.fasta=<path>")
        fa = open_fasta(fasta_path)
        lengths = {k: len(v) for k, v in fa.records.items()}
        out = []
        with open(os.path.expanduser(bed_path)) as f:
            for number, raw in enumerate(f, start=1):
                cols = raw.split()
                if not cols or cols[0].startswith(("#", "track", "browser")):
                    continue
                if len(cols) < 3:
                    raise ValueError(f"{bed_path}:{number}: expected at least 'chrom start end', got {raw.strip()!r}")
                try:
                    start, end = int(cols[1]), int(cols[2])
                except ValueError:
                    raise ValueError(f"{bed_path}:{number}: start/end must be integers, got {cols[1]!r} {cols[2]!r}") from None
                if cols[0] not in lengths:
                    raise ValueError(f"{bed_path}:{number}: chromosome {cols[0]!r} is not in the FASTA {fasta_path}")
                if not 0 <= start < end <= lengths[cols[0]]:
                    raise ValueError(f"{bed_path}:{number}: need 0 <= start < end <= {lengths[cols[0]]}, "
                                     f"got {start} {end}")
                name = cols[3] if len(cols) > 3 and cols[3] not in SPLIT_ALIASES else f"{cols[0]}:{start}-{end}"
                out.append((name, fa[cols[0]][start:end]))
        return out
    fa = open_fasta(input_path)
    return [(name, fa[name][:]) for name in fa.keys()]


def embed_sequences(model: nn.Module, sequences: List[Tuple[str, str]], pooling: str = "mean",
                    rc_average: bool = False, batch_size: int = 8, chunk_len: int = 65536,
                    progress: bool = True) -> np.ndarray:
    """(n, d_model) float32 embeddings; sequences of equal length are batched together (so a
    batch never needs padding and batched == one at a time), longer ones run in chunks."""
    from tqdm import tqdm

    from .base import model_device

    tokenizer = DNATokenizer()
    device = model_device(model)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][1]))
    result: List[Optional[np.ndarray]] = [None] * len(sequences)
    groups: List[List[int]] = []
    for i in order:
        if groups and len(sequences[groups[-1][0]][1]) == len(sequences[i][1]) and len(groups[-1]) < batch_size:
            groups[-1].append(i)
        else:
            groups.append([i])
    was_training = model.training
    model.eval()
    try:
        for group in tqdm(groups, desc="embed", disable=not progress):
            ids = torch.stack([tokenizer.encode_tensor(sequences[i][1], where=sequences[i][0]) for i in group]).to(device)
            pooled = pooled_features(model, ids, chunk_len, pooling).float()
            if rc_average:
                pooled = (pooled + pooled_features(model, reverse_complement_ids(ids), chunk_len, pooling).float()) / 2
            for row, i in enumerate(group):
                result[i] = pooled[row].float().cpu().numpy()
    finally:
        model.train(was_training)
    return np.stack(result)  # type: ignore[arg-type]


def _pool(hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    return hidden.float().mean(dim=1) if pooling == "mean" else hidden[:, -1]


def write_embeddings(out_path: str, names: List[str], vectors: np.ndarray, fmt: str) -> List[str]:
    """``.npy`` (+ ``<out>.names.txt``, one name per line, row order) or safetensors (tensor
    ``embeddings`` + the names in the metadata and in ``<out>.names.txt``)."""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)) or ".", exist_ok=True)
    index = out_path + ".names.txt"
    if fmt == "npy":
        with atomic_open(out_path, "wb") as f:
            np.save(f, vectors.astype(np.float32))
    else:
        import json

        from safetensors.numpy import save

        with atomic_open(out_path, "wb") as f:
            f.write(save({"embeddings": np.ascontiguousarray(vectors.astype(np.float32))},
                         metadata={"names": json.dumps(names)}))
    with atomic_open(index) as f:
        f.writelines(n + "\n" for n in names)
    return [out_path, index]


def embed_verb(task, model: nn.Module, cfg: Mapping, out_path: str) -> Dict[str, Any]:
    """``seqmamba embed`` for the DNA tasks (settings under ``task.embed``)."""
    settings = as_plain_dict(config_get(cfg, "task.embed", {}))
    input_path = settings.get("input")
    fasta = settings.get("fasta") or config_get(cfg, "dataset.fasta", None)
    pooling = check_choice("task.embed.pooling", settings.get("pooling", "mean"), ("mean", "last"))
    fmt = check_choice("task.embed.format", settings.get("format", "npy"), ("npy", "safetensors"))
    batch_size = check_int("task.embed.batch_size", settings.get("batch_size", 8), minimum=1)
    chunk_len = check_int("task.embed.chunk_len", settings.get("chunk_len", 65536), minimum=1)
    sequences = read_embedding_inputs(str(input_path) if input_path else "", settings.get("bed"), fasta)
    if not sequences:
        raise ValueError(f"task.embed.input={input_path!r}: no sequences to embed")
    vectors = embed_sequences(model, sequences, pooling, bool(settings.get("rc_average", False)), batch_size,
                              chunk_len)
    if not out_path.endswith((".npy", ".safetensors")):  # a folder (the CLI's out_dir / <run dir>/embeddings)
        out_path = os.path.join(out_path, "embeddings.npy" if fmt == "npy" else "embeddings.safetensors")
    files = write_embeddings(out_path, [n for n, _ in sequences], vectors, "npy" if out_path.endswith(".npy")
                             else "safetensors")
    return {"n_sequences": len(sequences), "dim": int(vectors.shape[1]), "pooling": pooling, "files": files}


@TASKS.register("hg38")
class HG38Task(NextTokenTask):
    supports_seq_len_warmup = True
    bos_token_id = BOS
    monitor = "val/loss"

    def __init__(self, cfg: Mapping):
        super().__init__(cfg)
        self.vocab_size = VOCAB_SIZE
        self.tokenizer = DNATokenizer()
        params = resolve_demo_paths(cfg, ("fasta", "bed"))
        self.dataset_name = params.pop("name", "fasta_intervals")
        self.seq_len = check_int("dataset.seq_len", params.pop("seq_len", 1024), minimum=2)
        self.dataset_params = params
        self.seed = check_int("seed", config_get(cfg, "seed", 0), minimum=0)
        self.batch_size = check_int("trainer.batch_size", config_get(cfg, "trainer.batch_size", 8), minimum=1)
        self.micro_batches = check_int("trainer.grad_accum_steps", config_get(cfg, "trainer.grad_accum_steps", 1),
                                       minimum=1)
        self.rc_prob = check_float("task.rc_prob", config_get(cfg, "task.rc_prob", 0.0), 0.0, 1.0)
        self.val_windows = check_int("task.val_windows", config_get(cfg, "task.val_windows", 256), minimum=1)
        self.val_batch_size = check_int("task.val_batch_size", config_get(cfg, "task.val_batch_size", 16), minimum=1)
        self.constant_tokens = bool(config_get(cfg, "task.constant_tokens_per_batch", True))
        self._datasets: Dict[Tuple[str, int], FastaIntervalDataset] = {}
        self.train_len = self.seq_len
        self.train_data = self.dataset("train", self.seq_len)
        self._val_sets: Optional[Dict[str, List]] = None
        self._baselines: Dict[int, float] = {}

    def dataset(self, split: str, seq_len: int) -> FastaIntervalDataset:
        key = (split, seq_len)
        if key not in self._datasets:
            self._datasets[key] = DATASETS.get(self.dataset_name)(**self.dataset_params, seq_len=seq_len, split=split)
        return self._datasets[key]

    # -- data -------------------------------------------------------------------------------
    def set_seq_len(self, length: int) -> None:
        self.train_len = check_int("trainer.seq_len_warmup length", length, minimum=2)
        self.train_data = self.dataset("train", self.train_len)

    def current_batch_size(self) -> int:
        if self.constant_tokens and self.train_len != self.seq_len:
            return max(1, self.batch_size * self.seq_len // self.train_len)
        return self.batch_size

    def draw_batch(self, batch_size: int, generator: torch.Generator, data: Optional[FastaIntervalDataset] = None):
        data = data or self.train_data
        windows = []
        while len(windows) < batch_size:
            for _ in range(MAX_REDRAWS):
                i = int(torch.randint(len(data), (1,), generator=generator))
                rc = self.rc_prob > 0 and float(torch.rand((), generator=generator)) < self.rc_prob
                ids = data.tokens(i, rc)
                if not data.too_many_n(ids):
                    break
                if not data.counts["n_windows_redrawn"]:
                    warnings.warn(f"{data.fasta_path}: training windows with more than max_n_fraction="
                                  f"{data.max_n_fraction} N are redrawn; counted in the final summary")
                data.counts["n_windows_redrawn"] += 1
            else:
                raise ValueError(f"{data.fasta_path}: {MAX_REDRAWS} windows in a row had more than max_n_fraction="
                                 f"{data.max_n_fraction} N")
            data.counts["n_bases_masked"] += int((ids == N).sum())
            windows.append(ids)
        return window_batch(windows)

    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1) -> Iterator:
        step, data, batch_size = int(start_step), self.train_data, self.current_batch_size()
        while True:
            for micro in range(self.micro_batches):
                yield self.draw_batch(batch_size, seeded_generator(self.seed, TRAIN_STREAM, step, rank, micro), data)
            step += 1

    def val_sets(self) -> Dict[str, Sequence]:
        if self._val_sets is None:  # no randomness: the same windows on every run and rank
            data = self.dataset("valid", self.seq_len)
            picks = np.unique(np.linspace(0, len(data) - 1, num=min(self.val_windows, len(data))).round().astype(int))
            windows, skipped = [], 0
            for i in picks:
                ids = data.tokens(int(i))
                if data.too_many_n(ids):
                    skipped += 1
                    continue
                windows.append(ids)
            if skipped:
                warnings.warn(f"hg38 validation: {skipped} of {len(picks)} windows left out (more than "
                              f"max_n_fraction={data.max_n_fraction} N)")
            if not windows:
                raise ValueError(f"hg38 validation: every one of the {len(picks)} windows is mostly N")
            batches = [window_batch(windows[s:s + self.val_batch_size])
                       for s in range(0, len(windows), self.val_batch_size)]
            self._val_sets = {"val": batches}
            self._baselines[id(batches)] = base_frequency_ppl(batches)
        return self._val_sets

    # -- metrics ----------------------------------------------------------------------------
    def reduce_metrics(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        metrics = super().reduce_metrics(sums)
        metrics["bits_per_base"] = metrics.pop("bits_per_token")
        return metrics

    def evaluate(self, model: nn.Module, batches: Sequence) -> Dict[str, float]:
        metrics = super().evaluate(model, batches)
        if id(batches) in self._baselines:
            metrics["base_freq_ppl"] = self._baselines[id(batches)]
        return metrics

    def eval_checkpoint(self, model: nn.Module, out_dir: str) -> Dict[str, Any]:
        results = super().eval_checkpoint(model, out_dir)
        for (split, length), data in sorted(self._datasets.items()):
            print(f"hg38 data, {split} at L={length}: {data.summary()}")
        for name, m in results.items():
            if "base_freq_ppl" in m:
                verdict = "below" if m["ppl"] < m["base_freq_ppl"] else "NOT below"
                print(f"hg38 {name}: perplexity {m['ppl']:.4f} ({m['bits_per_base']:.4f} bits/base) vs the "
                      f"0th-order base-frequency model's {m['base_freq_ppl']:.4f}: {verdict}")
        return results

    # -- generation -------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> List[int]:
        """DNA text -> [BOS] + its bases (an empty prompt: [BOS] alone)."""
        return [BOS] + self.tokenizer.encode(prompt.strip(), where="generate.prompt").astype(int).tolist()

    def decode_samples(self, ids: torch.Tensor) -> List[str]:
        out = []
        for row in ids.tolist():
            if EOS in row:
                row = row[: row.index(EOS)]
            out.append(self.tokenizer.decode([t for t in row if t >= A]))
        return out

    def write_samples(self, samples: List[str], out_dir: str) -> List[str]:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "samples.fa")
        with atomic_open(path) as f:
            for i, seq in enumerate(samples):
                f.write(f">sample_{i} length={len(seq)}\n")
                f.writelines(seq[j:j + 80] + "\n" for j in range(0, len(seq), 80))
        return [path]

    def embed(self, model: nn.Module, cfg: Mapping, out_path: str) -> Dict[str, Any]:
        return embed_verb(self, model, cfg, out_path)
