"""Backbone mixers on the GPU: correctness of every MIXERS entry, Table 1 step speed, activation
checkpointing's cost, and chunked inference at 2^20 tokens. One script, a short table last.

1. correctness (fp32, TF32 off): per mixer, chunked (chunks of 3, 1 and 64) == parallel forward (rel 1e-4);
   bf16 autocast forward + backward finite.
2. Table 1 shapes (selective copying: 2 layers, D 64, vocab 16, batch 64, L 4096, bf16 autocast):
   forward + backward + AdamW ms per step and steps/s for each <arch>_<inner> and "mamba".
3. activation checkpointing: 12 Mamba blocks, D 128 (~1.4M params), batch 1, L 2^20, bf16: step time
   and peak memory with and without ``set_activation_checkpointing(True)``.
4. chunked inference: same model, 2^20 tokens in chunks of 2^16 vs one full pass: max rel difference,
   tokens/s, peak memory.

    python benchmarks/bench_mixers_gpu.py            # on the H200, ~3 min; writes $OUT/bench_mixers.json
    python benchmarks/bench_mixers_gpu.py --quick    # tiny CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback

import torch

from seqmamba.models import MambaLM
from seqmamba.models.chunked import chunked_features
from seqmamba.modules import InferenceParams
from seqmamba.modules.baselines import ARCHS, INNERS
from seqmamba.registry import MIXERS

SMALL = {"s4d": {"d_state": 8}, "hyena": {"l_max": 64, "filter_order": 16}, "attention": {"num_heads": 2}}
for _arch in ARCHS:
    SMALL[f"{_arch}_s4d"] = {"d_state": 8}
    SMALL[f"{_arch}_hyena"] = {"l_max": 64, "filter_order": 16}
ALL = ["mamba", "attention", "s4d", "hyena"] + [f"{a}_{i}" for a in ARCHS for i in INNERS]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gb(device):
    return torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def correctness(device, L):
    rows = []
    for name in ALL:
        torch.manual_seed(0)
        row = {"mixer": name}
        try:
            mixer = MIXERS.get(name)(32, layer_idx=0, device=device, **SMALL.get(name, {}))
            x = torch.randn(2, L, 32, device=device)
            with torch.no_grad():
                y = mixer(x)
                for chunk in (3, 1, 64):
                    params = InferenceParams(max_seqlen=L, max_batch_size=2)
                    outs = []
                    for a in range(0, L, chunk):
                        outs.append(mixer(x[:, a:a + chunk], inference_params=params))
                        params.seqlen_offset = min(a + chunk, L)
                    err = ((torch.cat(outs, 1) - y).abs().max() / y.abs().max()).item()
                    row[f"chunk{chunk}_rel"] = err
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = mixer(x)
            out.float().square().mean().backward()
            row["bf16_finite"] = bool(torch.isfinite(out).all()) and all(
                torch.isfinite(p.grad).all().item() for p in mixer.parameters() if p.grad is not None)
            row["ok"] = row["bf16_finite"] and all(row[f"chunk{c}_rel"] < 1e-4 for c in (3, 1, 64))
        except Exception as err:  # report and go on: one broken mixer must not hide the others
            row["ok"], row["error"] = False, f"{type(err).__name__}: {err}"
            traceback.print_exc()
        print("correctness", row, flush=True)
        rows.append(row)
    return rows


def table1_speed(device, batch, L, steps):
    rows = []
    for name in ["mamba"] + [f"{a}_{i}" for a in ARCHS for i in INNERS]:
        torch.manual_seed(0)
        cfg = {"layer": name}
        if name.endswith("hyena"):
            cfg.update(l_max=L, filter_order=64)
        if name.endswith("s4d"):
            cfg.update(d_state=64)
        row = {"mixer": name}
        try:
            model = MambaLM(d_model=64, n_layer=2, vocab_size=16, ssm_cfg=cfg, device=device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            ids = torch.randint(0, 16, (batch, L), device=device)
            reset_peak(device)
            for i in range(steps + 2):
                if i == 2:
                    sync(device)
                    t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = model(ids)
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync(device)
            ms = (time.perf_counter() - t0) / steps * 1e3
            row.update(params=sum(p.numel() for p in model.parameters()), ms_per_step=ms, steps_per_s=1e3 / ms,
                       peak_gb=peak_gb(device), loss=float(loss))
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        print("table1", row, flush=True)
        rows.append(row)
    return rows


def checkpointing_cost(device, L, steps):
    rows = []
    for enabled in (False, True):
        torch.manual_seed(0)
        model = MambaLM(d_model=128, n_layer=12, vocab_size=16, device=device).set_activation_checkpointing(enabled)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        ids = torch.randint(0, 16, (1, L), device=device)
        reset_peak(device)
        row = {"activation_checkpointing": enabled, "L": L}
        try:
            for i in range(steps + 1):
                if i == 1:
                    sync(device)
                    t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = model(ids)
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync(device)
            sec = (time.perf_counter() - t0) / steps
            row.update(s_per_step=sec, tokens_per_s=L / sec, peak_gb=peak_gb(device),
                       params=sum(p.numel() for p in model.parameters()))
        except torch.cuda.OutOfMemoryError as err:
            row["error"] = f"OOM: {str(err).splitlines()[0]}"
        print("checkpointing", row, flush=True)
        rows.append(row)
        del model, opt
    return rows


def chunked_inference(device, L, chunk):
    torch.manual_seed(0)
    model = MambaLM(d_model=128, n_layer=12, vocab_size=16, device=device).eval()
    ids = torch.randint(0, 16, (1, L), device=device)
    row = {"L": L, "chunk_len": chunk}
    reset_peak(device)
    with torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        full = model.features(ids)
        sync(device)
        row.update(full_s=time.perf_counter() - t0, full_peak_gb=peak_gb(device))
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    chunked = chunked_features(model, ids, chunk)
    sync(device)
    row.update(chunked_s=time.perf_counter() - t0, chunked_peak_gb=peak_gb(device),
               chunked_tokens_per_s=L / (time.perf_counter() - t0),
               max_rel_diff=((chunked - full).abs().max() / full.abs().max()).item())
    print("chunked", row, flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke run)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    q = args.quick
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    results["correctness"] = correctness(device, L=40 if q else 300)
    results["table1"] = table1_speed(device, batch=2 if q else 64, L=64 if q else 4096, steps=1 if q else 10)
    results["checkpointing"] = checkpointing_cost(device, L=256 if q else 2 ** 20, steps=1 if q else 3)
    results["chunked"] = chunked_inference(device, L=512 if q else 2 ** 20, chunk=128 if q else 2 ** 16)
    out = os.environ.get("OUT", ".")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench_mixers.json"), "w") as f:
        json.dump(results, f, indent=2)

    print(f"\n== {results['device']} ==")
    print(f"{'mixer':14s} {'ok':>4s} {'chunk3':>9s} {'chunk1':>9s} {'bf16':>5s}")
    for r in results["correctness"]:
        print(f"{r['mixer']:14s} {str(r['ok']):>4s} {r.get('chunk3_rel', float('nan')):9.1e} "
              f"{r.get('chunk1_rel', float('nan')):9.1e} {str(r.get('bf16_finite', '-')):>5s} {r.get('error', '')}")
    print(f"\n{'Table 1 mixer':14s} {'ms/step':>9s} {'steps/s':>8s} {'peak GB':>8s}")
    for r in results["table1"]:
        print(f"{r['mixer']:14s} {r.get('ms_per_step', float('nan')):9.2f} {r.get('steps_per_s', float('nan')):8.1f} "
              f"{r.get('peak_gb', float('nan')):8.2f} {r.get('error', '')}")
    print(f"\n{'ckpt':5s} {'L':>8s} {'s/step':>8s} {'tok/s':>10s} {'peak GB':>8s}")
    for r in results["checkpointing"]:
        print(f"{str(r['activation_checkpointing']):5s} {r['L']:8d} {r.get('s_per_step', float('nan')):8.3f} "
              f"{r.get('tokens_per_s', float('nan')):10.0f} {r.get('peak_gb', float('nan')):8.2f} {r.get('error', '')}")
    c = results["chunked"]
    print(f"\nchunked L={c['L']} chunk={c['chunk_len']}: rel diff {c['max_rel_diff']:.1e}, {c['chunked_s']:.2f} s "
          f"({c['chunked_peak_gb']:.2f} GB) vs full {c['full_s']:.2f} s ({c['full_peak_gb']:.2f} GB)")


if __name__ == "__main__":
    main()
