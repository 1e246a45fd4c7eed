"""DNA tasks: hg38 and great_apes on tiny demo genomes (deterministic data, metrics, confusion files,
FASTA samples), chunked inference and embeddings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from seqmamba.data.demo_genomes import make
from seqmamba.data.dna_tokenizer import DNATokenizer
from seqmamba.models.mamba_lm import MambaLM
from tasks.great_apes import GreatApesTask
from tasks.hg38 import HG38Task, chunked_features, embed_sequences, read_embedding_inputs, write_embeddings

MODEL = {"name": "mamba_lm", "d_model": 16, "n_layer": 2, "ssm_cfg": {"d_state": 4, "d_conv": 4, "expand": 2}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return make(str(root), n_chroms=14, chrom_length=6000, seed=1, bed_interval=1024, quiet=True)


def _cfg(demo, task, **over):
    base = {
        "seed": 0,
        "model": MODEL,
        "trainer": {"batch_size": 4, "grad_accum_steps": 1},
        "optimizer": {"name": "adamw", "lr": 1e-3},
    }
    if task == "hg38":
        base["task"] = {"name": "hg38", "val_windows": 8, "val_batch_size": 4, "rc_prob": 0.5}
        base["dataset"] = {"name": "fasta_intervals", "fasta": demo["fasta"], "bed": demo["bed"], "seq_len": 128}
    else:
        base["task"] = {"name": "great_apes", "val_samples": 10, "val_batch_size": 4, "pooling": "last"}
        base["dataset"] = {"name": "species_windows", "species_dir": demo["species_dir"], "seq_len": 128}
    cfg = OmegaConf.create(base)
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def _same_batches(a, b):
    return len(a) == len(b) and all(all(torch.equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


@pytest.mark.parametrize("task_cls,name", [(HG38Task, "hg38"), (GreatApesTask, "great_apes")])
def test_validation_set_is_identical_across_runs_and_ranks_and_training_is_deterministic(demo, task_cls, name):
    one, two = task_cls(_cfg(demo, name)), task_cls(_cfg(demo, name, seed=5))
    assert _same_batches(one.val_sets()["val"], two.val_sets()["val"])  # the training seed does not move it
    first = [next(iter(one.train_batches(3, rank=1, world_size=2))) for _ in range(2)]
    again = next(iter(task_cls(_cfg(demo, name)).train_batches(3, rank=1, world_size=2)))
    other_rank = next(iter(one.train_batches(3, rank=0, world_size=2)))
    assert _same_batches([first[0]], [again]) and not torch.equal(first[0][0], other_rank[0])


def test_hg38_trains_evaluates_and_reports_the_base_frequency_model(demo, tmp_path):
    task = HG38Task(_cfg(demo, "hg38"))
    model = task.build_model()
    opt = task.configure_optimizer(model)
    batches = task.train_batches(0)
    for _ in range(3):
        loss, metrics = task.training_step(model, next(batches))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    results = task.eval_checkpoint(model, str(tmp_path))["val"]
    assert 1.0 < results["base_freq_ppl"] <= 4.0 + 1e-9  # a 4-letter unigram model
    assert math.isclose(results["bits_per_base"], results["loss"] / math.log(2), rel_tol=1e-9)
    assert math.isclose(results["ppl"], math.exp(results["loss"]), rel_tol=1e-9)


def test_hg38_sequence_length_warmup_keeps_tokens_per_batch(demo):
    task = HG38Task(_cfg(demo, "hg38"))
    task.set_seq_len(32)
    inputs, targets = next(iter(task.train_batches(0)))
    assert inputs.shape == (4 * 128 // 32, 32) and targets.shape == inputs.shape


def test_hg38_generate_writes_fasta(demo, tmp_path):
    cfg = _cfg(demo, "hg38", n_samples=2)
    OmegaConf.update(cfg, "generate", {"prompt": "ACGT", "max_new_tokens": 10, "temperature": 1.0}, force_add=True)
    task = HG38Task(cfg)
    out = task.generate(task.build_model().eval(), str(tmp_path))
    text = open(out["files"][0]).read().split("\n")
    assert text[0].startswith(">sample_0") and set(text[1]) <= set("ACGTN") and text[1].startswith("ACGT")


def test_great_apes_evaluates_and_writes_the_confusion_matrix(demo, tmp_path):
    task = GreatApesTask(_cfg(demo, "great_apes"))
    model = task.build_model()
    results = task.eval_checkpoint(model, str(tmp_path))["val"]
    assert 0.0 <= results["acc"] <= 1.0 and task.num_classes == 5
    csv_path, png_path = results["confusion_files"]
    rows = open(csv_path).read().strip().split("\n")
    assert rows[0].endswith("human,chimpanzee,bonobo,gorilla,orangutan")
    assert sum(int(v) for r in rows[1:] for v in r.split(",")[1:]) == 10
    assert open(png_path, "rb").read(4) == b"\x89PNG"


def test_great_apes_loads_an_hg38_checkpoint_backbone(demo, tmp_path):
    lm = HG38Task(_cfg(demo, "hg38")).build_model()
    path = tmp_path / "last.pt"
    torch.save({"model": lm.state_dict()}, path)
    model = GreatApesTask(_cfg(demo, "great_apes", **{"task.pretrained": str(path)})).build_model()
    assert torch.equal(model.backbone.backbone.embedding.weight, lm.backbone.embedding.weight)


def test_chunked_inference_equals_the_full_pass():
    torch.manual_seed(0)
    model = MambaLM(d_model=16, n_layer=2, vocab_size=8, ssm_cfg={"d_state": 4, "d_conv": 4, "expand": 2}).eval()
    ids = torch.randint(3, 8, (2, 203))
    with torch.no_grad():
        full = model.features(ids)
        for chunk in (64, 50, 7, 202):
            torch.testing.assert_close(chunked_features(model, ids, chunk), full, rtol=1e-4, atol=1e-5)


def test_batched_embeddings_equal_one_at_a_time(demo, tmp_path):
    torch.manual_seed(0)
    model = MambaLM(d_model=16, n_layer=2, vocab_size=8, ssm_cfg={"d_state": 4, "d_conv": 4, "expand": 2}).eval()
    bed = tmp_path / "regions.bed"
    bed.write_text("chr2\t1000\t1300\tregionA\nchr2\t2000\t2300\tregionB\nchr4\t1500\t1700\nchr4\t100\t400\n")
    seqs = read_embedding_inputs(str(bed), None, demo["fasta"])
    assert [n for n, _ in seqs][:3] == ["regionA", "regionB", "chr4:1500-1700"]
    for pooling, rc in (("mean", False), ("last", True)):
        batched = embed_sequences(model, seqs, pooling, rc, batch_size=8, chunk_len=128, progress=False)
        single = np.stack([embed_sequences(model, [s], pooling, rc, batch_size=1, chunk_len=10**6, progress=False)[0]
                           for s in seqs])
        np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    files = write_embeddings(str(tmp_path / "emb.npy"), [n for n, _ in seqs], batched, "npy")
    assert np.load(files[0]).shape == (4, 16) and open(files[1]).read().split() == [n for n, _ in seqs]


@pytest.mark.parametrize("with_bed", [True, False])
def test_hg38_takes_any_fasta_with_a_basenji_bed_or_none(tmp_path, with_bed):
    rng = np.random.default_rng(0)
    seqs = {name: "".join(rng.choice(list("ACGTacgt"), size=n)) for name, n in (("seqA", 3000), ("seqB", 2100))}
    fasta = tmp_path / "any.fa"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    bed = tmp_path / "any.bed"
    bed.write_text("seqA\t0\t2048\ttrain\nseqB\t0\t1024\tvalid\n")
    dataset = {"name": "fasta_intervals", "fasta": str(fasta), "bed": str(bed) if with_bed else None,
               "seq_len": 256, "val_chroms": None if with_bed else ["seqB"]}
    cfg = _cfg({"fasta": "unused", "bed": None}, "hg38", dataset=dataset)
    task = HG38Task(cfg)
    (inputs, targets), = task.val_sets()["val"][:1]
    assert inputs.shape == (4, 256)
    window = DNATokenizer().decode(targets[0])
    assert window == seqs["seqB"][:256].upper()  # the first validation window, read directly
    inputs, targets = next(iter(task.train_batches(0)))
    assert inputs.shape == (4, 256) and torch.equal(inputs[:, 1:], targets[:, :-1])

