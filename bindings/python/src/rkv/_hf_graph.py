"""The decode step of the whole model replayed from a CUDA graph.

RkvCache(model, cuda_graph=True) wraps the model's forward (once per model,
transparent for any other cache). A decode step of an RkvCache (one token per
row, after the first call, nothing asked for but logits) then runs as:
  1. host bookkeeping before the step: compress the sequences that are full
     (rkv_compress_due + rkv_compress, enqueued outside the graph);
  2. the step's inputs (token ids, positions) copied into static buffers;
  3. the graph replayed: every layer's projections, RoPE, rkv_append and
     rkv_attend with the cache's batch (ids read from device memory), MLPs,
     logits;
  4. rkv_batch_advance(1): the host learns what the replay appended, no sync.
The first decode step of a batch runs eagerly on a side stream (it warms up
every lazy initialisation) and then the step is captured for the next ones; a
new batch (beam search reordering keeps it, batch_select_indices does not) is
captured again. Inputs the graph cannot serve (embeddings, several tokens,
attentions or hidden states asked for) run eagerly.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# Keyword arguments a graphed step may take: the inputs it copies into static
# buffers, the ones it ignores (the 2D padding mask: padding never reaches
# librkv, and decode attention needs no mask) and flags baked into the graph.
_STATIC_INPUTS = ("input_ids", "position_ids")
_IGNORED = ("attention_mask", "past_key_values", "cache", "use_cache", "return_dict")
_FLAGS_OFF = ("output_attentions", "output_hidden_states")


def install_forward(model) -> None:
    """Route the model's forward through RkvCache._forward when an RkvCache is
    passed as past_key_values (once per model; signature kept for generate's
    introspection)."""
    if getattr(model, "_rkv_forward_installed", False):
        return
    original = model.forward

    @functools.wraps(original)
    def forward(*args, **kwargs):
        # transformers 5.17 names the argument past_key_values, later versions cache
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        route = getattr(cache, "_forward", None)
        if route is None or args:
            return original(*args, **kwargs)
        return route(original, kwargs)

    model.forward = forward
    model._rkv_forward_installed = True


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    input_ids: torch.Tensor      # [rows, 1] static
    position_ids: torch.Tensor   # [rows, 1] static
    output: object               # the captured step's ModelOutput (static logits)


class DecodeGraphs:
    """The captured decode steps of one RkvCache, by batch and flags."""

    def __init__(self, cache):
        self.cache = cache
        self.graphs: dict = {}
        self.pool = None
        self.replays = 0
        self.captures = 0

    def clear(self) -> None:
        """Forget every graph: they bake in the batch's address, so the cache
        calls this whenever it replaces its batch."""
        self.graphs.clear()

    def key(self, kwargs):
        """The graph a decode step would replay, or None if it must run eagerly."""
        ids = kwargs.get("input_ids")
        if ids is None or kwargs.get("inputs_embeds") is not None or not ids.is_cuda:
            return None
        if ids.dim() != 2 or ids.shape[1] != 1:
            return None
        if any(kwargs.get(flag) for flag in _FLAGS_OFF) or kwargs.get("use_cache") is False:
            return None
        flags = []
        for name, value in kwargs.items():
            if name in _STATIC_INPUTS or name in _IGNORED:
                continue
            if isinstance(value, torch.Tensor):
                return None  # a tensor the graph would bake in
            try:
                hash(value)
            except TypeError:
                return None
            flags.append((name, value))
        return ids.shape[0], tuple(sorted(flags))

    def run(self, forward, kwargs, key):
        cache = self.cache
        graph = self.graphs.get(key)
        if graph is None:
            return self._warm_up_and_capture(forward, kwargs, key)
        cache._begin_step()
        graph.input_ids.copy_(kwargs["input_ids"])
        self._positions_into(graph.position_ids, kwargs.get("position_ids"))
        graph.graph.replay()
        cache._end_step(replayed=True)
        self.replays += 1
        return _with_logits(graph.output, graph.output.logits.clone())

    def _positions_into(self, static, positions) -> None:
        if positions is None:  # transformers' default: the columns seen so far
            static.fill_(self.cache.get_seq_length())
        else:
            static.copy_(positions.reshape(static.shape))

    def _call(self, forward, kwargs, input_ids, position_ids):
        call = {k: v for k, v in kwargs.items() if k not in _STATIC_INPUTS and k != "attention_mask"}
        return forward(input_ids=input_ids, position_ids=position_ids, attention_mask=None, **call)

    def _warm_up_and_capture(self, forward, kwargs, key):
        cache = self.cache
        ids = kwargs["input_ids"]
        static_ids = torch.empty_like(ids)
        static_positions = torch.empty((ids.shape[0], 1), dtype=torch.long, device=ids.device)
        static_ids.copy_(ids)
        self._positions_into(static_positions, kwargs.get("position_ids"))
        # This step, eagerly, on a side stream: lazy initialisations (cuBLAS
        # handles and workspaces, ...) happen here, not in the capture.
        current = torch.cuda.current_stream(ids.device)
        side = torch.cuda.Stream(ids.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            output = self._call(forward, kwargs, static_ids, static_positions)
            logits = output.logits.clone()
        current.wait_stream(side)
        # The next steps: capture (nothing runs; librkv's host bookkeeping is
        # left alone while capturing, the replays account for themselves).
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        cache._capturing = True
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                captured = self._call(forward, kwargs, static_ids, static_positions)
        except Exception as error:
            raise RuntimeError(
                f"capturing the decode step in a CUDA graph failed ({error}); the model may do "
                f"host work in its forward (e.g. dynamic RoPE). Use RkvCache(..., cuda_graph=False)"
            ) from error
        finally:
            cache._capturing = False
        self.graphs[key] = _Graph(graph, static_ids, static_positions, captured)
        self.captures += 1
        return _with_logits(output, logits)


def _with_logits(output, logits):
    """A copy of a ModelOutput with other logits (the graph's are static)."""
    fresh = output.__class__(**{k: v for k, v in output.items()})
    fresh["logits"] = logits
    return fresh
