"""GPU diagnosis: the selective-copying checkpoint scores ~47% on the CPU but ~11% in the GPU eval."""
import sys
import torch
sys.path.insert(0, ".")
import seqmamba.tasks  # noqa: F401
from seqmamba.commands.hydra_app import compose_config, register_resolvers
from seqmamba.commands.verbs import build_task
from seqmamba.train.checkpoint import load_model_weights
from seqmamba.data import synthetic
from seqmamba.ops import selective_scan, causal_conv1d

register_resolvers()
cfg = compose_config(["experiment=paper/selective_copying", "trainer.device=cuda"])
task = build_task(cfg)
model = task.build_model()
load_model_weights(model, "outputs/paper/selective_copying/checkpoints/last.pt")
model = model.cuda().eval()
x, y = synthetic.fixed_batches(task.data, 1234, 256, 256)[0]
x, y = x.cuda(), y.cuda()

def set_backend(name):
    for m in model.modules():
        if hasattr(m, "scan_backend"):
            m.scan_backend = name

def run(rows, backend, bf16, grad=False):
    set_backend(backend)
    ctx = torch.autocast("cuda", torch.bfloat16) if bf16 else torch.autocast("cuda", enabled=False)
    with torch.set_grad_enabled(grad), ctx:
        s = task.eval_step(model, (x[:rows], y[:rows]))
    return float(s["correct"]) / float(s["count"]), float(s["loss_sum"]) / float(s["count"])

for rows in (256, 64, 8):
    for backend in ("torch", "triton"):
        for bf16 in (False, True):
            for grad in ((False, True) if backend == "triton" else (False,)):
                acc, loss = run(rows, backend, bf16, grad)
                print(f"rows {rows:3d} {backend:6s} bf16 {bf16!s:5s} grad {grad!s:5s} acc {acc:.4f} loss {loss:.4f}", flush=True)

# the ops alone at the eval's shape
g = torch.Generator(device="cuda").manual_seed(0)
for batch, L in ((256, 4112), (64, 4112), (256, 4096), (8, 4112)):
    dim, N = 128, 16
    u = torch.randn(batch, dim, L, device="cuda", generator=g)
    delta = 0.5 * torch.randn(batch, dim, L, device="cuda", generator=g)
    z = torch.randn(batch, dim, L, device="cuda", generator=g)
    A = -torch.rand(dim, N, device="cuda", generator=g) * 4 - 0.5
    B = torch.randn(batch, N, L, device="cuda", generator=g)
    C = torch.randn(batch, N, L, device="cuda", generator=g)
    D = torch.randn(dim, device="cuda", generator=g)
    bias = 0.1 * torch.randn(dim, device="cuda", generator=g)
    ref = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, backend="torch")
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            uu = u.clone().requires_grad_(grad)
            out = selective_scan(uu, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, backend="triton")
        err = ((out.detach() - ref).abs().amax(dim=(0, 1)) / ref.abs().amax()).cpu()
        bad = torch.nonzero(err > 1e-3).flatten()
        print(f"scan ({batch},{dim},{L}) grad {grad}: max rel {err.max():.2e}; bad steps {bad.numel()} "
              f"first {bad[:3].tolist()} last {bad[-3:].tolist()}", flush=True)
    w = torch.randn(dim, 4, device="cuda", generator=g)
    cb = torch.randn(dim, device="cuda", generator=g)
    r = causal_conv1d(u, w, cb, "silu", backend="torch")
    t = causal_conv1d(u, w, cb, "silu", backend="triton")
    print(f"conv ({batch},{dim},{L}): max abs {(r - t).abs().max():.2e}", flush=True)
