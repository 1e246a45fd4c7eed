"""Checkpoint interop: a state_dict with mamba_ssm's exact names and shapes loads into MambaLM with no
mapping and gives the logits of an independent plain-PyTorch reference of the official equations;
the transformers "-hf" layout loads too; bad checkpoints fail naming what is wrong."""
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from seqmamba.models import MambaLM
from seqmamba.models.pretrained import load_state_dict_file
from helpers import max_rel_err as rel_err

D_MODEL, N_LAYER, VOCAB, PADDED_VOCAB, D_STATE, D_CONV, EXPAND = 32, 2, 37, 40, 8, 4, 2
D_INNER, DT_RANK = EXPAND * D_MODEL, math.ceil(D_MODEL / 16)
OFFICIAL_CONFIG = {"d_model": D_MODEL, "n_layer": N_LAYER, "vocab_size": VOCAB, "ssm_cfg": {"d_state": D_STATE},
                   "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}
HF_CONFIG = {"model_type": "mamba", "architectures": ["MambaForCausalLM"], "hidden_size": D_MODEL,
             "num_hidden_layers": N_LAYER, "vocab_size": PADDED_VOCAB, "state_size": D_STATE, "expand": EXPAND,
             "conv_kernel": D_CONV, "time_step_rank": DT_RANK, "use_bias": False, "use_conv_bias": True,
             "hidden_act": "silu", "intermediate_size": D_INNER, "layer_norm_epsilon": 1e-5,
             "residual_in_fp32": True, "tie_word_embeddings": True, "pad_token_id": 0, "bos_token_id": 0,
             "eos_token_id": 0, "initializer_range": 0.1, "rescale_prenorm_residual": False, "use_cache": True,
             "time_step_init_scheme": "random", "time_step_max": 0.1, "time_step_min": 0.001,
             "time_step_floor": 1e-4, "time_step_scale": 1.0,
             # converted -hf configs also keep some official names; transformers' names win
             "d_model": D_MODEL, "n_layer": N_LAYER, "ssm_cfg": {}, "pad_vocab_size_multiple": 8}


# ------------------------------------------------------------------------- independent reference
def official_state_dict(seed=0):
    """Random weights under mamba_ssm's MambaLMHeadModel key names and shapes (tied head)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, scale=1.0: torch.randn(*shape, generator=g) * scale  # noqa: E731
    sd = {"backbone.embedding.weight": rand(PADDED_VOCAB, D_MODEL)}
    for i in range(N_LAYER):
        p = f"backbone.layers.{i}."
        sd[p + "norm.weight"] = 1 + rand(D_MODEL, scale=0.2)
        sd[p + "mixer.A_log"] = torch.empty(D_INNER, D_STATE).uniform_(-3, 1, generator=g)
        sd[p + "mixer.D"] = rand(D_INNER)
        sd[p + "mixer.in_proj.weight"] = rand(2 * D_INNER, D_MODEL, scale=D_MODEL ** -0.5)
        sd[p + "mixer.conv1d.weight"] = rand(D_INNER, 1, D_CONV, scale=0.5)
        sd[p + "mixer.conv1d.bias"] = rand(D_INNER, scale=0.1)
        sd[p + "mixer.x_proj.weight"] = rand(DT_RANK + 2 * D_STATE, D_INNER, scale=D_INNER ** -0.5)
        sd[p + "mixer.dt_proj.weight"] = rand(D_INNER, DT_RANK, scale=DT_RANK ** -0.5)
        sd[p + "mixer.dt_proj.bias"] = torch.empty(D_INNER).uniform_(-4, 0, generator=g)
        sd[p + "mixer.out_proj.weight"] = rand(D_MODEL, D_INNER, scale=D_INNER ** -0.5)
    sd["backbone.norm_f.weight"] = 1 + rand(D_MODEL, scale=0.2)
    sd["lm_head.weight"] = sd["backbone.embedding.weight"]
    return sd


def ref_rms_norm(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def ref_selective_scan(u, delta, A, B, C, D, z, delta_bias):
    """mamba_ssm's selective_scan_ref with B, C of shape (batch, N, L)."""
    delta = F.softplus(delta + delta_bias[:, None])
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        state = deltaA[:, :, i] * state + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, i]))
    y = torch.stack(ys, dim=2) + u * D[:, None]
    return y * F.silu(z)


def ref_mamba_mixer(hidden, sd, p):
    """mamba_ssm Mamba.forward's slow path, in (batch, dim, L) layout."""
    L = hidden.shape[1]
    xz = torch.einsum("ed,bld->bel", sd[p + "in_proj.weight"], hidden)
    x, z = xz[:, :D_INNER], xz[:, D_INNER:]
    x = F.silu(F.conv1d(x, sd[p + "conv1d.weight"], sd[p + "conv1d.bias"], padding=D_CONV - 1, groups=D_INNER)[..., :L])
    x_dbl = torch.einsum("rd,bdl->brl", sd[p + "x_proj.weight"], x)
    dt, B, C = x_dbl[:, :DT_RANK], x_dbl[:, DT_RANK:DT_RANK + D_STATE], x_dbl[:, DT_RANK + D_STATE:]
    delta = torch.einsum("dr,brl->bdl", sd[p + "dt_proj.weight"], dt)
    A = -torch.exp(sd[p + "A_log"])
    y = ref_selective_scan(x, delta, A, B, C, sd[p + "D"], z, sd[p + "dt_proj.bias"])
    return torch.einsum("md,bdl->blm", sd[p + "out_proj.weight"], y)


def ref_logits(sd, input_ids):
    """MixerModel + LM head: residual = hidden + residual; hidden = mixer(norm(residual)); norm_f; tied head."""
    hidden = sd["backbone.embedding.weight"][input_ids]
    residual = None
    for i in range(N_LAYER):
        p = f"backbone.layers.{i}."
        residual = hidden if residual is None else hidden + residual
        hidden = ref_mamba_mixer(ref_rms_norm(residual, sd[p + "norm.weight"]), sd, p + "mixer.")
    hidden = ref_rms_norm(hidden + residual, sd["backbone.norm_f.weight"])
    return hidden @ sd["lm_head.weight"].T


def write_official(directory, sd, config=OFFICIAL_CONFIG):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    torch.save(sd, directory / "pytorch_model.bin")
    return directory


# ------------------------------------------------------------------------- loading
def test_official_state_dict_loads_without_mapping_and_matches_reference_logits(tmp_path):
    sd = official_state_dict()
    model = MambaLM.from_pretrained(write_official(tmp_path / "official", sd)).eval()
    assert set(model.state_dict()) == set(sd)
    ids = torch.randint(0, VOCAB, (2, 29), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids)
    expected = ref_logits(sd, ids)
    assert logits.shape == expected.shape == (2, 29, PADDED_VOCAB)
    assert rel_err(logits, expected) < 1e-5
    assert model.lm_head.weight is model.backbone.embedding.weight


def test_reference_comparison_detects_a_changed_weight(tmp_path):
    """The check above can fail: one mixer weight off by 1% changes the logits beyond its tolerance."""
    sd = official_state_dict()
    model = MambaLM.from_pretrained(write_official(tmp_path / "official", sd)).eval()
    with torch.no_grad():
        model.backbone.layers[1].mixer.x_proj.weight.mul_(1.01)
        ids = torch.randint(0, VOCAB, (2, 29), generator=torch.Generator().manual_seed(1))
        assert rel_err(model(ids), ref_logits(sd, ids)) > 1e-4


def test_hf_layout_loads_and_matches_reference_logits(tmp_path):
    from safetensors.torch import save_file

    sd = official_state_dict()
    hf = {("backbone.embeddings.weight" if k == "backbone.embedding.weight" else k): v.clone()
          for k, v in sd.items() if k != "lm_head.weight"}
    directory = tmp_path / "hf"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(HF_CONFIG))
    save_file(hf, str(directory / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every field of a real -hf config is understood
        model = MambaLM.from_pretrained(directory).eval()
    assert model.padded_vocab_size == PADDED_VOCAB and model.backbone.layers[0].mixer.d_state == D_STATE
    ids = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert rel_err(model(ids), ref_logits(sd, ids)) < 1e-5


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path):
    sd = official_state_dict()
    bad = dict(sd)
    del bad["backbone.layers.1.mixer.D"]
    bad["backbone.layers.0.mixer.extra.weight"] = torch.zeros(3)
    bad["backbone.layers.0.mixer.x_proj.weight"] = torch.zeros(5, D_INNER)
    with pytest.raises(ValueError) as err:
        MambaLM.from_pretrained(write_official(tmp_path / "bad", bad))
    message = str(err.value)
    assert "missing keys: ['backbone.layers.1.mixer.D']" in message
    assert "unexpected keys: ['backbone.layers.0.mixer.extra.weight']" in message
    assert f"backbone.layers.0.mixer.x_proj.weight: checkpoint (5, {D_INNER}), model ({DT_RANK + 2 * D_STATE}, {D_INNER})" in message


class NotATensor:  # pickled by reference: unpickling it would import and construct arbitrary code
    def __init__(self):
        self.payload = "anything"


def test_bin_with_pickled_object_is_refused(tmp_path):
    sd = official_state_dict()
    sd["backbone.norm_f.weight"] = NotATensor()
    directory = tmp_path / "pickled"
    with pytest.raises(ValueError, match="refusing to load: the file holds pickled objects other than tensors"):
        MambaLM.from_pretrained(write_official(directory, sd))


def test_bin_with_non_tensor_entries_is_refused(tmp_path):
    torch.save({"backbone.norm_f.weight": torch.ones(2), "step": 3}, tmp_path / "x.bin")
    with pytest.raises(ValueError, match=r"not tensors: \['step'\]"):
        load_state_dict_file(tmp_path / "x.bin")


def test_directory_without_weights_or_config_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MambaLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        MambaLM.from_pretrained(tmp_path)


# ------------------------------------------------------------------------- saving
@pytest.mark.parametrize("safe", [True, False])
def test_save_pretrained_round_trips_in_the_official_layout(tmp_path, safe):
    torch.manual_seed(0)
    model = MambaLM(d_model=D_MODEL, n_layer=N_LAYER, vocab_size=VOCAB,
                    ssm_cfg={"d_state": D_STATE, "scan_backend": "reference"}).eval()
    model.save_pretrained(tmp_path, safe_serialization=safe)
    weights = tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")
    assert weights.is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    # only mamba_ssm's MambaConfig fields, so mamba_ssm can read it back
    assert set(config) <= {"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx",
                           "attn_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple",
                           "tie_embeddings"}
    assert config["ssm_cfg"] == {"d_state": D_STATE}
    if not safe:  # the official .bin holds every key, the tied head included
        assert set(load_state_dict_file(weights)) == set(model.state_dict())
    loaded = MambaLM.from_pretrained(tmp_path).eval()
    loaded_state = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded_state[key], value), key
    loaded.set_scan_backend("reference")  # scan_backend is not saved: it is a run-time choice
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert loaded.lm_head.weight is loaded.backbone.embedding.weight


def test_from_pretrained_casts_to_the_requested_dtype_keeping_ssm_params_fp32(tmp_path):
    sd = official_state_dict()
    model = MambaLM.from_pretrained(write_official(tmp_path / "official", sd), dtype=torch.bfloat16)
    mixer = model.backbone.layers[0].mixer
    assert mixer.in_proj.weight.dtype == torch.bfloat16 and mixer.A_log.dtype == torch.float32
    ids = torch.randint(0, VOCAB, (1, 12))
    assert rel_err(model(ids).float(), ref_logits(sd, ids)) < 5e-2


def test_mamba1_layer_spelling_loads_and_round_trips(tmp_path):
    """mamba_ssm's ``ssm_cfg={"layer": "Mamba1"}`` builds the "mamba" mixer with the official keys."""
    sd = official_state_dict()
    directory = write_official(tmp_path / "official", sd)
    config = json.loads((directory / "config.json").read_text())
    config["ssm_cfg"]["layer"] = "Mamba1"
    (directory / "config.json").write_text(json.dumps(config))
    model = MambaLM.from_pretrained(directory).eval()
    plain = MambaLM.from_pretrained(write_official(tmp_path / "plain", sd)).eval()
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), plain(ids))
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["ssm_cfg"]["layer"] == "Mamba1"


def test_baseline_mixers_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = MambaLM(d_model=16, n_layer=2, vocab_size=VOCAB,
                    ssm_cfg={"layer": ["mamba", {"layer": "h3_s4d", "d_state": 8}]}).eval()
    model.save_pretrained(tmp_path)
    loaded = MambaLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids))
