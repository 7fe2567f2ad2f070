"""Create a cache, append a few tokens, compress, read a view."""
import numpy as np

import rkv

rng = np.random.default_rng(0)
heads, dim = 2, 16
with rkv.Cache(max_seqs=1, num_layers=1, num_kv_heads=heads, head_dim=dim,
               method="rkv", budget=8, buffer=4, window=2) as cache:
    # 12 prompt tokens in transformers' layout [seq, head, token, dim]
    k, v, q = (rng.standard_normal((1, heads, 12, dim), dtype=np.float32) for _ in range(3))
    cache.append(0, [0], k, v, q=q, prompt=True)
    cache.compress(0)                   # 12 held > budget 8: keep 8 per head
    view = cache.view(0, 0)             # numpy arrays over the cache's memory
    print("held", view.length, "of", view.logical_length, "tokens")
    print("positions kept by head 0:", view.positions[0].tolist())
    print("K of head 0:", view.k[0].shape)
