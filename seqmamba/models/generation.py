"""Autoregressive sampling for any model with a recurrent cache (MambaLM, SaShiMi, ...).

The loop needs three things from the model:

* ``allocate_inference_cache(batch_size, max_seqlen, dtype=None)``: the per-layer states, stored in an
  :class:`InferenceParams` as ``key_value_memory_dict``;
* ``step(input_ids (batch, 1), inference_params) -> logits (batch, vocab)``: one token per row at
  position ``inference_params.seqlen_offset``, states updated in place, offset left to the caller;
* optionally ``prefill(input_ids (batch, L), inference_params) -> logits (batch, vocab)`` of the last
  position (a parallel pass over the prompt); without it the prompt is stepped through token by token.

Sampling follows mamba_ssm / transformers: repetition penalty, then temperature (0 = greedy), top-k,
top-p (nucleus), min-p, then a draw from a seeded ``torch.Generator`` when one is given.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..cuda_graphs import warm_up_and_capture
from ..modules import InferenceParams

__all__ = ["InferenceParams", "generate", "sample_next_token", "validate_sampling_args", "CUDAGraphStep"]


# ---------------------------------------------------------------------------------------- sampling
def validate_sampling_args(temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0, min_p: float = 0.0,
                           repetition_penalty: float = 1.0) -> None:
    """Raise ValueError naming the first out-of-range sampling parameter."""
    if not temperature >= 0:  # also catches NaN
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {top_k!r}")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1] (0 or 1 disables it), got {top_p}")
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1] (0 disables it), got {min_p}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 disables it), got {repetition_penalty}")


def apply_repetition_penalty(logits: torch.Tensor, previous_tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: tokens already in the row get their logit divided by ``penalty`` if positive,
    multiplied if negative (so penalty > 1 always makes them less likely)."""
    if penalty == 1.0:
        return logits
    seen = torch.gather(logits, 1, previous_tokens)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, previous_tokens, seen)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, min_p: float = 0.0) -> torch.Tensor:
    """Set to -inf every logit that top-k, top-p or min-p rules out (each disabled at 0; top_p also at 1)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the top token always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if min_p > 0.0:
        probs = logits.softmax(dim=-1)
        threshold = min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                      min_p: float = 0.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits (batch, vocab) -> token ids (batch,). temperature 0 or top_k 1 is greedy (argmax)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    probs = logits.softmax(dim=-1)
    if generator is not None and generator.device != probs.device:
        # Draw where the generator lives, so a CPU generator reproduces the same samples on any device.
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------- CUDA graph
class CUDAGraphStep:
    """``model.step`` for one token, captured once as a CUDA graph and replayed.

    The graph reads the input ids from a static buffer and writes the logits to another; the states in
    ``inference_params`` are static too (prefill overwrites them in place), so one capture serves every
    decode step of every sequence with the same batch size.
    """

    def __init__(self, model, inference_params: InferenceParams, batch_size: int, n_warmup: int = 2):
        device = next(model.parameters()).device
        self.model = model
        self.inference_params = inference_params
        self.static_input_ids = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        saved_offset = inference_params.seqlen_offset
        inference_params.seqlen_offset = 1  # any offset > 0 selects the one-token recurrent path
        self.graph, self.static_logits = warm_up_and_capture(
            lambda: model.step(self.static_input_ids, inference_params), n_warmup)
        inference_params.seqlen_offset = saved_offset
        # The warm-up and capture advanced the states with garbage; the next prefill overwrites them all.

    def __call__(self, input_ids: torch.Tensor, inference_params: InferenceParams) -> torch.Tensor:
        if inference_params is not self.inference_params:
            raise ValueError("CUDAGraphStep: replay needs the inference_params the graph was captured with")
        self.static_input_ids.copy_(input_ids.view(-1, 1))
        self.graph.replay()
        return self.static_logits

    def prefill_graph(self, prompt_len: int) -> "CUDAGraphPrefill":
        """The captured prefill of ``prompt_len`` tokens into this step's states (one kept: a new length
        replaces it, since each holds a whole forward's activations)."""
        graph = getattr(self, "_prefill", None)
        if graph is None or graph.prompt_len != prompt_len:
            self._prefill = None
            graph = self._prefill = CUDAGraphPrefill(self.model, self.inference_params, prompt_len)
        return graph


class CUDAGraphPrefill:
    """``model.prefill`` of one (batch, prompt length), captured once as a CUDA graph and replayed
    (``generate(..., cg=True, cg_prefill=True)``).

    A prefill is one parallel forward, but at small batch its kernels are too short to hide the host's
    launches: the 130M model's prefill of 2048 tokens at batch 1 takes 16.6 ms of which the GPU works 2.8
    (H200, issue 9). Replayed, only the GPU's time is left. It writes the same static states as the decode
    graph it belongs to (``CUDAGraphStep.prefill_graph``). Worth it when prompt lengths repeat (benchmarks,
    serving with bucketed lengths): each new length costs a warm-up and a capture.
    """

    def __init__(self, model, inference_params: InferenceParams, prompt_len: int, n_warmup: int = 2):
        device = next(model.parameters()).device
        self.model, self.inference_params, self.prompt_len = model, inference_params, int(prompt_len)
        self.static_input_ids = torch.zeros(inference_params.max_batch_size, self.prompt_len, dtype=torch.long,
                                            device=device)
        saved_offset = inference_params.seqlen_offset
        inference_params.seqlen_offset = 0  # a prefill starts from an empty cache
        self.graph, self.static_logits = warm_up_and_capture(
            lambda: model.prefill(self.static_input_ids, inference_params), n_warmup)
        inference_params.seqlen_offset = saved_offset

    def __call__(self, input_ids: torch.Tensor, inference_params: InferenceParams) -> torch.Tensor:
        if inference_params is not self.inference_params or tuple(input_ids.shape) != tuple(self.static_input_ids.shape):
            raise ValueError(f"CUDAGraphPrefill: captured for prompts of shape {tuple(self.static_input_ids.shape)} "
                             f"and its own inference_params, got {tuple(input_ids.shape)}")
        self.static_input_ids.copy_(input_ids)
        self.graph.replay()
        return self.static_logits


def _walk_for_graphs(model) -> Tuple[tuple, list]:
    """One pass over ``model.modules()`` for ``generate(cg=True)``: (the parameters' (address, version) pairs, in
    ``model.parameters()`` order, the graph cache's key; the sorted names of the module types whose step indexes
    its cache by position, which a graph cannot decode). It runs on the host before any GPU work of the call, so
    one walk, not two (model.modules() for the check, then model.parameters(), which walks the modules again):
    for the 130M model's 198 modules 1.2-1.5 ms instead of 1.8-2.3 on a 2-core host."""
    seen, key, by_position = set(), [], set()
    for module in model.modules():
        if getattr(module, "step_reads_offset", False):
            by_position.add(type(module).__name__)
        for p in module._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                key.append((p.data_ptr(), p._version))
    return tuple(key), sorted(by_position)


def _graph_for(model, batch_size: int, max_seqlen: int, dtype, cache_kwargs: dict,
               params_key: Optional[tuple] = None) -> CUDAGraphStep:
    """One captured step per (batch, max_seqlen, dtype, cache options, parameter storage), cached on the model.

    The key holds the parameters' addresses: after ``model.to(...)`` the old graph would read freed memory.
    ``params_key``: _walk_for_graphs(model)'s, when the caller has it.
    """
    # Versions too: an in-place update (optimizer step, load_state_dict) must recapture, since the step
    # caches values derived from parameters (Mamba._ssm_constants) that a replay would not recompute.
    if params_key is None:
        params_key = _walk_for_graphs(model)[0]
    key = (batch_size, max_seqlen, dtype, tuple(sorted(cache_kwargs.items())), params_key)
    cache = model.__dict__.setdefault("_cuda_graph_steps", {})
    if key not in cache:
        cache.clear()  # one live graph per model: each holds its own states and memory pool
        cache[key] = CUDAGraphStep(model, InferenceParams.allocated_for(model, batch_size, max_seqlen, dtype,
                                                                        **cache_kwargs), batch_size)
    return cache[key]


# ---------------------------------------------------------------------------------------- the loop
@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 0.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
             eos_token_id: Optional[int] = None, pad_token_id: Optional[int] = None,
             generator: Optional[torch.Generator] = None, cg: bool = False, max_seqlen: Optional[int] = None,
             vocab_size: Optional[int] = None, dtype: Optional[torch.dtype] = None,
             cg_prefill: bool = False, ssm_state_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Continue each row of ``input_ids`` (batch, L >= 1) by up to ``max_new_tokens`` tokens.

    Returns (batch, L + T) with T <= max_new_tokens: generation stops early once every row has produced
    ``eos_token_id``; a finished row is filled with ``pad_token_id`` (default: the eos id) after its eos.
    ``vocab_size`` restricts sampling to the real vocabulary when the logits are padded.
    ``max_seqlen`` is the cache capacity (default L + max_new_tokens); a longer request is refused.
    ``cg=True`` decodes under a captured CUDA graph (CUDA only); ``cg_prefill=True`` (with ``cg``) also replays
    the prompt's forward from a graph captured for this (batch, prompt length): small batches stop paying the
    host's launches, and each new prompt length pays one capture. ``ssm_state_dtype``: the Mamba layers' state
    dtype in the cache (fp32 by default; torch.bfloat16 is mamba_ssm's choice for a bf16 model: half the state
    traffic per decode step, the state rounded to bf16 after each token).
    """
    validate_sampling_args(temperature, top_k, top_p, min_p, repetition_penalty)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if input_ids.dim() != 2 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}, expected (batch, L) with L >= 1")
    if input_ids.dtype != torch.long:
        raise ValueError(f"input_ids must be torch.long token ids, got {input_ids.dtype}")
    batch_size, prompt_len = input_ids.shape
    max_seqlen = prompt_len + max_new_tokens if max_seqlen is None else max_seqlen
    if prompt_len > max_seqlen:
        raise ValueError(f"the prompt has {prompt_len} tokens, longer than the cache (max_seqlen={max_seqlen})")
    if prompt_len + max_new_tokens > max_seqlen:
        raise ValueError(f"prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) = "
                         f"{prompt_len + max_new_tokens} exceeds the cache (max_seqlen={max_seqlen})")
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0

    params_key = None
    if cg:
        params_key, by_position = _walk_for_graphs(model)
        if by_position:
            raise ValueError(f"cg=True: {', '.join(by_position)} index their cache by position, which a captured "
                             "CUDA graph would freeze at the capture step; decode these models with cg=False")
    if cg and not input_ids.is_cuda:
        raise ValueError("cg=True (CUDA graph decoding) needs the model and input_ids on a CUDA device")
    if cg_prefill and not (cg and hasattr(model, "prefill")):
        raise ValueError("cg_prefill=True needs cg=True and a model with a parallel prefill (model.prefill)")
    sequences = torch.full((batch_size, prompt_len + max_new_tokens), pad_token_id, dtype=torch.long,
                           device=input_ids.device)
    sequences[:, :prompt_len] = input_ids
    if max_new_tokens == 0:
        return sequences
    cache_kwargs = {} if ssm_state_dtype is None else {"ssm_state_dtype": ssm_state_dtype}

    if cg:
        graph_step = _graph_for(model, batch_size, max_seqlen, dtype, cache_kwargs, params_key)
        inference_params = graph_step.inference_params
        inference_params.reset(max_seqlen, batch_size)
        step = graph_step
    else:
        inference_params = InferenceParams.allocated_for(model, batch_size, max_seqlen, dtype, **cache_kwargs)
        step = model.step

    if cg_prefill:
        logits = graph_step.prefill_graph(prompt_len)(input_ids, inference_params)
    elif hasattr(model, "prefill"):
        logits = model.prefill(input_ids, inference_params)
    else:
        for t in range(prompt_len):
            inference_params.seqlen_offset = t
            logits = model.step(input_ids[:, t:t + 1], inference_params)
    inference_params.seqlen_offset = prompt_len

    finished = torch.zeros(batch_size, dtype=torch.bool, device=input_ids.device)
    length = prompt_len
    for i in range(max_new_tokens):
        logits = logits[:, :vocab_size] if vocab_size is not None else logits
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits.float(), sequences[:, :length], repetition_penalty)
        next_tokens = sample_next_token(logits, temperature, top_k, top_p, min_p, generator)
        if eos_token_id is not None:  # only then can a row be finished
            next_tokens = torch.where(finished, torch.full_like(next_tokens, pad_token_id), next_tokens)
        sequences[:, length] = next_tokens
        length += 1
        if eos_token_id is not None:
            finished |= next_tokens == eos_token_id
            if bool(finished.all()):
                break
        if i == max_new_tokens - 1:
            break  # no logits needed after the last token
        logits = step(next_tokens[:, None], inference_params)
        inference_params.seqlen_offset += 1
    return sequences[:, :length]
