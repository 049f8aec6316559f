"""PyTorch / sentence-transformers side of `cargo bench --bench encoder`: all-MiniLM-L6-v2
forward at batch 32 x 128 tokens on CPU, same ids scheme, torch threads = all cores.

    ~/.cache/recsys/pyref/bin/python benches/encoder_torch.py   (venv: see tests/fixtures/encoder/make_fixtures.py)
"""
import os
import statistics
import time

import torch
from transformers import AutoModel

BATCH, TOKENS = 32, 128
torch.set_num_threads(os.cpu_count())
model = AutoModel.from_pretrained(os.path.join(os.path.dirname(__file__), "..", "models", "all-MiniLM-L6-v2")).eval()
rows = [[101] + [1000 + (r * 7919 + i * 104729) % 28000 for i in range(1, TOKENS - 1)] + [102] for r in range(BATCH)]
ids = torch.tensor(rows)
mask = torch.ones_like(ids)


def run():
    with torch.inference_mode():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        v = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(v, dim=1)


def timed(fn, warmup, n):
    """Median and minimum seconds of `n` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


med, fastest = timed(run, 3, 10)
print(f"torch {torch.__version__}, threads {torch.get_num_threads()}: median {med*1000:.1f} ms per batch "
      f"of {BATCH}x{TOKENS} = {BATCH/med:.1f} sentences/s (min {fastest*1000:.1f} ms)")


# One training step's compute: forward of 32 queries + 32 positives, in-batch MNRL, backward.
model.train()
docs = ids.flip(0)


def step():
    def emb(x):
        h = model(input_ids=x, attention_mask=mask).last_hidden_state
        return torch.nn.functional.normalize((h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True), dim=1)
    q, p = emb(ids), emb(docs)
    loss = torch.nn.functional.cross_entropy(20.0 * q @ p.T, torch.arange(BATCH))
    loss.backward()
    model.zero_grad()


med, _ = timed(step, 2, 5)
print(f"torch train step (fwd+bwd, 32 queries + 32 positives x {TOKENS} tokens): median {med*1000:.0f} ms")
