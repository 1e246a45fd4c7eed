"""SC09 audio on one GPU (issue 12), one script: demo speech -> SC09 digit classifier -> SaShiMi training ->
64 clips of 16000 samples generated recurrently (samples/s) -> FID / IS / mIS / AM of generated clips vs
white noise vs mu-law-uniform samples vs the test split, all against train-split statistics.

    OUT=gpu_logs bash benchmarks/gpu_audio.sh        # or: python benchmarks/gpu_audio.py --out gpu_logs

Under --out: demo data, run dirs (metrics, checkpoints), samples/*.wav (a few), samples/spectrograms.png,
audio_results.json; the summary table is printed last. Budget: about 5-7 minutes on an H200.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import seqmamba  # noqa: E402,F401  (from a checkout it maps tasks/ and configs/ itself: seqmamba/__init__.py)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def compose_cfg(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        from seqmamba.commands.hydra_app import configs_dir
    except ImportError:
        from seqmamba.cli import configs_dir
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=configs_dir(), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def train(overrides, run_dir):
    import seqmamba.tasks  # noqa: F401
    from seqmamba.tasks import get_task
    from seqmamba.train import Trainer

    cfg = compose_cfg(overrides)
    task = get_task(cfg.task.name)(cfg)
    trainer = Trainer(task, cfg, run_dir)
    started = time.time()
    trainer.fit()
    seconds = time.time() - started
    model = trainer.model
    model.eval()
    return task, model, seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_logs"))
    parser.add_argument("--speakers", type=int, default=120, help="demo speakers (10 clips each)")
    parser.add_argument("--classifier-steps", type=int, default=400)
    parser.add_argument("--sc09-steps", type=int, default=600)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=4, help="blocks per stage of the trained SaShiMi")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--clip", type=int, default=16000)
    parser.add_argument("--speed-steps", type=int, default=4000, help="steps timed for the 6M model's generation speed")
    parser.add_argument("--device", default="cuda", help="cpu: a shrunk smoke run of the script itself")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    dev = args.device
    if dev == "cuda":
        assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU (or --device cpu for a smoke run)"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    results = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "args": vars(args)}

    # 1. demo speech ---------------------------------------------------------------------------------
    data = os.path.join(out, "sc09_demo")
    t0 = time.time()
    subprocess.run([sys.executable, os.path.join(REPO, "data_scripts", "make_demo_speech.py"), "--out", data,
                    "--speakers", str(args.speakers), "--quiet"], check=True)
    results["demo_seconds"] = time.time() - t0
    log(f"demo speech: {args.speakers * 10} clips in {results['demo_seconds']:.1f} s")
    common = [f"dataset.root={data}", f"trainer.device={dev}", "trainer.progress=false", "trainer.num_threads=null"]

    # 2. classifier -------------------------------------------------------------------------------------
    clf_dir = os.path.join(out, "run_classifier")
    ctask, clf, clf_s = train(["task=sc09_classifier", *common, f"trainer.max_steps={args.classifier_steps}",
                               f"trainer.batch_size={min(64, args.speakers * 8)}", "trainer.eval_every=100", "trainer.ckpt_every=1000000"],
                              clf_dir)
    clf_eval = ctask.eval_checkpoint(clf, clf_dir)
    results["classifier"] = {"seconds": clf_s, "val_acc": clf_eval["val"]["acc"], "test_acc": clf_eval["test"]["acc"]}
    log(f"classifier: val acc {clf_eval['val']['acc']:.4f}, test acc {clf_eval['test']['acc']:.4f} ({clf_s:.0f} s)")
    from seqmamba.models.sc09_classifier import load_sc09_classifier

    classifier = load_sc09_classifier(clf_eval["exported"], dev)

    # 3. SaShiMi on SC09 ------------------------------------------------------------------------------
    sc_dir = os.path.join(out, "run_sc09")
    task, model, sc_s = train(["task=sc09", *common, f"model.d_model={args.d_model}", f"model.n_layers={args.n_layers}",
                               "task.train_crop=0", "task.max_val_clips=null", "task.val_batch_size=32",
                               f"trainer.max_steps={args.sc09_steps}", f"trainer.batch_size={args.batch_size}",
                               "trainer.eval_every=200", "trainer.ckpt_every=1000000",
                               f"dataset.clip_length={args.clip}"], sc_dir)
    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
        val = task.evaluate(model, task.val_sets()["val"])
    n_params = sum(p.numel() for p in model.parameters())
    results["sc09"] = {"seconds": sc_s, "params": n_params, "val_bits_per_sample": val["bits_per_sample"],
                       "uniform_bits": math.log2(task.vocab_size), "steps": args.sc09_steps}
    log(f"sc09: {n_params / 1e6:.2f}M params, val NLL {val['bits_per_sample']:.3f} bits/sample "
        f"(uniform {math.log2(task.vocab_size):.0f}) after {args.sc09_steps} steps, {sc_s:.0f} s")

    # 4. recurrent generation ---------------------------------------------------------------------------
    model.float()
    sync()
    t0 = time.time()
    gen = task.generate_waves(model, args.n_gen, args.clip, args.n_gen, seed=0)
    sync()
    gen_s = time.time() - t0
    results["generation"] = {"clips": args.n_gen, "samples_per_clip": args.clip, "seconds": gen_s,
                             "samples_per_s": args.n_gen * args.clip / gen_s, "steps_per_s": args.clip / gen_s}
    log(f"generation: {args.n_gen} x {args.clip} samples in {gen_s:.1f} s = {args.n_gen * args.clip / gen_s:,.0f} samples/s")
    # correctness on the GPU: recurrent logits = parallel logits on a generated prefix (fp32)
    with torch.no_grad():
        ids = torch.randint(0, task.vocab_size, (2, 256), device=dev)
        cache = model.allocate_inference_cache(2)
        rec = torch.stack([model.step(ids[:, t], cache) for t in range(256)], 1)
        par = model(ids)
        rel = float((rec - par).abs().max() / par.abs().max())
    results["recurrent_vs_parallel_max_rel_err"] = rel
    log(f"recurrent vs parallel logits (fp32, 256 steps): max rel err {rel:.2e}")

    from seqmamba.tasks.sc09 import classifier_outputs, spectrogram_grid, write_wavs
    from seqmamba.data.sc09 import dequantize
    from seqmamba.metrics import score_samples

    sample_dir = os.path.join(out, "samples")
    write_wavs([w.numpy() for w in gen[:6]], sample_dir, 16000)
    spectrogram_grid([w.numpy() for w in gen], os.path.join(sample_dir, "spectrograms.png"), 16000)

    # 5. scores -----------------------------------------------------------------------------------------
    g = torch.Generator().manual_seed(1)
    noise = (torch.randn(args.n_gen, args.clip, generator=g) * 0.3).clamp(-1, 1)
    mulaw_uniform = dequantize(torch.randint(0, 256, (args.n_gen, args.clip), generator=g), 8, "mu-law")
    train_split, test_split = task.split("train"), task.split("test")
    ref_p, ref_f = classifier_outputs(classifier, train_split.waveforms())
    rows = {}
    for name, waves in (("generated", gen), ("white noise", noise), ("mu-law uniform", mulaw_uniform),
                        ("test split", test_split.waveforms())):
        p, f = classifier_outputs(classifier, waves)
        rows[name] = score_samples(ref_f, ref_p, f, p).as_dict()
    rows["train split (self)"] = score_samples(ref_f, ref_p, ref_f, ref_p).as_dict()
    results["scores"] = rows

    # 6. generation speed of the paper's 6M model (untrained weights; speed does not depend on them) -----
    from seqmamba.models.sashimi import SaShiMi

    big = SaShiMi(vocab_size=256, d_model=64, n_layers=8).to(dev).eval()
    sync()
    t0 = time.time()
    steps = min(args.clip, args.speed_steps)  # the cost per step is constant (O(1) state), so fewer steps suffice
    big.generate(torch.full((args.n_gen, 1), 128, device=dev), steps, generator=torch.Generator(dev).manual_seed(0))
    sync()
    big_s = time.time() - t0
    results["generation_6m"] = {"params": sum(p.numel() for p in big.parameters()), "seconds": big_s, "steps": steps,
                                "samples_per_s": args.n_gen * steps / big_s}
    log(f"6M SaShiMi generation: {args.n_gen} x {steps} steps, {args.n_gen * steps / big_s:,.0f} samples/s ({big_s:.1f} s)")

    with open(os.path.join(out, "audio_results.json"), "w") as f:
        json.dump(results, f, indent=2)

    # table last ------------------------------------------------------------------------------------------
    print("\n=== SC09 on", results["device"], "===")
    print(f"classifier (mel CNN): val acc {results['classifier']['val_acc']:.4f}  test acc {results['classifier']['test_acc']:.4f}")
    print(f"SaShiMi {n_params / 1e6:.2f}M ({args.sc09_steps} steps, batch {args.batch_size}, {sc_s:.0f} s): "
          f"val NLL {results['sc09']['val_bits_per_sample']:.3f} bits/sample (uniform 8.000)")
    print(f"recurrent = parallel (fp32): max rel err {rel:.1e}")
    print(f"generation, {args.n_gen} clips x {args.clip}: trained model {results['generation']['samples_per_s']:,.0f} "
          f"samples/s; 6M paper model {results['generation_6m']['samples_per_s']:,.0f} samples/s "
          f"(timed over {results['generation_6m']['steps']} steps)")
    print(f"{'set':<20}{'FID':>10}{'IS':>8}{'mIS':>10}{'AM':>8}{'n':>7}")
    for name, r in rows.items():
        print(f"{name:<20}{r['fid']:>10.3f}{r['is']:>8.3f}{r['mis']:>10.2f}{r['am']:>8.3f}{r['n']:>7d}")
    ok = (results["sc09"]["val_bits_per_sample"] < 6.0 and rows["generated"]["fid"] < rows["white noise"]["fid"]
          and rows["generated"]["fid"] < rows["mu-law uniform"]["fid"] and rel < 1e-3)
    print("checks:", "PASS" if ok else "FAIL", "(val NLL < 6 bits; generated FID < noise and mu-law-uniform FID; "
          "recurrent = parallel)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
