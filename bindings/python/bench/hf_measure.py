"""Measurements of hf_bench.py: one transformers model, decode steps timed
with each cache at a set state. Every step is what greedy decoding does per
token: the model's forward for one token per row, then the argmax.

  - DynamicCache: filled with random K/V to the context, then eager steps (its
    tensors grow every step: it cannot be captured in a CUDA graph).
  - StaticCache: preallocated to the context plus the steps, filled with
    random K/V, the step captured in a CUDA graph (what generate's
    torch.compile "reduce-overhead" does, without inductor's fusion); eager
    where capture fails (the report says so).
  - kvpress (where it runs, hf_kvpress.py): a DynamicCache filled likewise,
    eager steps with its DecodingPress hooks on the model.
  - RkvCache: a short real prompt through the adapter, then random K/V/Q
    appended straight into librkv up to each row's target, then steps through
    the adapter (CUDA graph replays with cuda_graph=True), compressions when due.
"""
from __future__ import annotations

import gc
import inspect
import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, StaticCache

import rkv
import rkv.hf


@dataclass
class Steps:
    """Timed decode steps of one configuration."""
    ms: float                      # mean milliseconds per step
    steps: int
    peak_bytes: int = 0            # device memory at its peak (torch's allocations + librkv's)
    compressions: int = 0          # (sequence, layer) compressions during the timed steps
    notes: list[str] = field(default_factory=list)


class Clock:
    """Device-side time of a run of steps (CUDA events), or wall time on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def time(self, step, count: int) -> float:
        """Milliseconds per step over `count` steps."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(count):
                step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / count
        started = time.perf_counter()
        for _ in range(count):
            step()
        return (time.perf_counter() - started) * 1e3 / count


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def torch_peak(device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


class Bench:
    """The model and what every measurement shares."""

    def __init__(self, model, device: torch.device, warmup: int = 2):
        self.model = model
        self.device = device
        self.clock = Clock(device)
        self.warmup = warmup
        config = model.config
        self.layers = config.num_hidden_layers
        self.kv_heads = config.num_key_value_heads
        self.q_heads = config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.vocab = config.vocab_size
        self.dtype = model.dtype
        # transformers 5.17 calls the forward's cache argument past_key_values, later versions cache
        self.cache_arg = ("cache" if "cache" in inspect.signature(model.forward).parameters
                          else "past_key_values")

    def tokens(self, batch: int):
        return torch.randint(3, self.vocab, (batch, 1), device=self.device)

    def _forward_step(self, cache, state):
        """One greedy step: state = [token ids [B, 1], positions [B, 1]]."""
        logits = self.model(input_ids=state[0], position_ids=state[1], use_cache=True,
                            logits_to_keep=1, **{self.cache_arg: cache}).logits
        state[0] = logits[:, -1:].argmax(dim=-1)
        state[1] = state[1] + 1

    def random_kv(self, batch: int, heads: int, length: int, generator_seed: int = 0):
        torch.manual_seed(generator_seed)
        return torch.randn(batch, heads, length, self.head_dim, dtype=self.dtype, device=self.device)

    # --- transformers' caches ---------------------------------------------------------
    def dynamic(self, batch: int, context: int, steps: int) -> Steps:
        self.model.set_attn_implementation("sdpa")
        reset_peak(self.device)
        cache = DynamicCache(config=self.model.config)
        k = self.random_kv(batch, self.kv_heads, context)
        for layer in range(self.layers):  # each layer its own tensors, as a prefill leaves them
            cache.update(k.clone(), k.clone(), layer)
        del k
        state = [self.tokens(batch), torch.full((batch, 1), context, device=self.device)]
        with torch.no_grad():
            for _ in range(self.warmup):
                self._forward_step(cache, state)
            ms = self.clock.time(lambda: self._forward_step(cache, state), steps)
        result = Steps(ms, steps, torch_peak(self.device))
        del cache, state
        release()
        return result

    def static(self, batch: int, context: int, steps: int) -> Steps:
        self.model.set_attn_implementation("sdpa")
        reset_peak(self.device)
        length = context + steps + self.warmup + 2
        cache = StaticCache(config=self.model.config, max_cache_len=length)
        cache.early_initialization(batch, self.kv_heads, self.head_dim, self.dtype, self.device)
        for layer in cache.layers:
            layer.keys[:, :, :context].normal_()
            layer.values[:, :, :context].normal_()
            layer.cumulative_length.fill_(context)
        state = [self.tokens(batch), torch.full((batch, 1), context, device=self.device)]
        notes = []
        with torch.no_grad():
            step = None
            if self.device.type == "cuda":
                try:
                    step = self._static_graph(cache, state)
                except Exception as error:  # noqa: BLE001 (reported, then measured eagerly)
                    notes.append(f"CUDA graph capture failed ({type(error).__name__}: "
                                 f"{str(error)[:120]}): eager steps")
                    torch.cuda.synchronize()
            if step is None:
                for _ in range(self.warmup):
                    self._forward_step(cache, state)
                step = lambda: self._forward_step(cache, state)  # noqa: E731
            ms = self.clock.time(step, steps)
        result = Steps(ms, steps, torch_peak(self.device), notes=notes)
        del cache, state, step
        release()
        return result

    def _static_graph(self, cache, state):
        """The step of a StaticCache captured in a CUDA graph; returns a replay."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up outside the capture
            for _ in range(self.warmup):
                self._forward_step(cache, state)
        torch.cuda.current_stream(self.device).wait_stream(side)
        tokens, positions = state[0].clone(), state[1].clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self.model(input_ids=tokens, position_ids=positions, use_cache=True,
                                logits_to_keep=1, **{self.cache_arg: cache}).logits
            following = logits[:, -1:].argmax(dim=-1)

        def replay():
            graph.replay()
            tokens.copy_(following)
            positions.add_(1)
        return replay

    def kvpress(self, kvpress, batch: int, held: int, steps: int, budget: int, interval: int) -> Steps:
        """Steps of a DynamicCache holding `held` tokens per row under kvpress's
        DecodingPress (hf_kvpress.py): its hooks run eagerly (a cache whose
        tensors are replaced at each compression cannot be captured)."""
        from hf_kvpress import make_press

        self.model.set_attn_implementation("sdpa")
        reset_peak(self.device)
        cache = DynamicCache(config=self.model.config)
        k = self.random_kv(batch, self.kv_heads, held)
        for layer in range(self.layers):
            cache.update(k.clone(), k.clone(), layer)
        del k
        state = [self.tokens(batch), torch.full((batch, 1), held, device=self.device)]
        press = make_press(kvpress, budget, interval)
        lengths = []
        with torch.no_grad(), press(self.model):
            for _ in range(self.warmup):
                self._forward_step(cache, state)
            lengths.append(cache.layers[0].keys.shape[2])

            def step():
                self._forward_step(cache, state)
                lengths.append(cache.layers[0].keys.shape[2])
            ms = self.clock.time(step, steps)
        compressions = sum(1 for a, b in zip(lengths, lengths[1:]) if b < a) * self.layers * batch
        result = Steps(ms, steps, torch_peak(self.device), compressions=compressions)
        del cache, state, press
        release()
        return result

    # --- librkv -------------------------------------------------------------------------
    def rkv(self, batch: int, held: list[int], steps: int, graph: bool, **options) -> Steps:
        """Steps of an RkvCache whose row s holds held[s] tokens per head."""
        self.model.set_attn_implementation(rkv.hf.ATTENTION_NAME)
        reset_peak(self.device)
        cache = rkv.hf.RkvCache(self.model, cuda_graph=graph, **options)
        prompt = 8
        ids = torch.randint(3, self.vocab, (batch, prompt), device=self.device)
        with torch.no_grad():
            self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self.cache_arg: cache})
            self._fill_rkv(cache, [h - prompt for h in held])
            state = [self.tokens(batch), torch.tensor(held, device=self.device)[:, None]]
            native = cache.native
            for _ in range(self.warmup):
                self._forward_step(cache, state)
            after_warmup = native.stats()
            ms = self.clock.time(lambda: self._forward_step(cache, state), steps)
            after = native.stats()
        result = Steps(ms, steps, torch_peak(self.device) + native.stats().bytes_allocated,
                       compressions=after.compressions - after_warmup.compressions)
        if graph and cache.graph_stats["replays"] < steps:
            result.notes.append(f"only {cache.graph_stats['replays']} of {steps} steps replayed a graph")
        cache.close()
        del cache, state
        release()
        return result

    def _fill_rkv(self, cache, extra: list[int], chunk: int = 64) -> None:
        """Append extra[s] random tokens straight into every layer of row s
        (no compression: the targets stay within the capacity)."""
        native = cache.native
        longest = max(extra)
        if longest <= 0:
            return
        for first in range(0, len(extra), chunk):
            rows = list(range(first, min(len(extra), first + chunk)))
            counts = [extra[r] for r in rows]
            width = max(counts)
            if width <= 0:
                continue
            k = self.random_kv(len(rows), self.kv_heads, width, first)
            q = self.random_kv(len(rows), self.q_heads, width, first + 1)
            entries = [r for r, c in zip(rows, counts) if c > 0]
            pick = torch.tensor([r - first for r in entries], device=self.device)
            if len(entries) != len(rows):
                k, q = k.index_select(0, pick), q.index_select(0, pick)
            for layer in range(self.layers):
                native.append(layer, [cache._rows[r] for r in entries], k, k, q=q,
                              num_tokens=[extra[r] for r in entries])
            del k, q
        for layer in cache.layers:  # transformers' column count, as a prefill would leave it
            layer.columns += longest
