"""PyTorch / sentence-transformers side of `make bench-encoder` (see benches/encoder.rs for the
parts; the same ids, texts, shapes and thread count, one part per process).

    python benches/encoder_torch.py --threads N [forward] [train_step] [train_step_long] [encode]

Prints one line `RESULT {json}` per part: median and minimum seconds, peak RSS of the process.
`encode` reads the 2,000 texts the Candle side wrote to $CARGO_TARGET_DIR/bench-data/.
"""
import argparse
import json
import os
import resource
import statistics
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "models", "all-MiniLM-L6-v2")
BATCH, TOKENS = 32, 128


def timed(fn, warmup, n):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def report(part, t, runs, **extra):
    out = {"side": "pytorch", "part": part, "threads": torch.get_num_threads(),
           "median_s": t[0], "min_s": t[1], "runs": runs,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
           "torch": torch.__version__}
    out.update(extra)
    print("RESULT " + json.dumps(out), flush=True)


def row(r, n):
    return [101] + [1000 + (r * 7919 + i * 104729) % 28000 for i in range(1, n - 1)] + [102]


def ids():
    return torch.tensor([row(r, TOKENS) for r in range(BATCH)])


def padded(rows):
    """Ids and attention mask, padded with 0 to the longest row (as the Candle side batches)."""
    n = max(len(r) for r in rows)
    x = torch.tensor([r + [0] * (n - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
    return x, mask


def mean_pool(model, x, mask):
    h = model(input_ids=x, attention_mask=mask).last_hidden_state
    v = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(v, dim=1)


def forward():
    from transformers import AutoModel
    model = AutoModel.from_pretrained(MODEL).eval()
    x = ids()
    mask = torch.ones_like(x)

    def run():
        with torch.inference_mode():
            mean_pool(model, x, mask)
    report("forward", timed(run, 3, 10), 10)


def train_step():
    x = ids()
    step("train_step", (x, torch.ones_like(x)), (x.flip(0), torch.ones_like(x)), 2, 5)


def train_step_long():
    """32 queries of 40-256 tokens padded to 256, 32 item texts of 110 tokens (benches/encoder.rs)."""
    queries = [row(r, 256 if r == 0 else 40 + (r * 37) % 217) for r in range(BATCH)]
    docs = [row(r + BATCH, 110) for r in range(BATCH)]
    step("train_step_long", padded(queries), padded(docs), 1, 3)


def step(part, queries, docs, warmup, runs):
    from transformers import AutoModel
    model = AutoModel.from_pretrained(MODEL).train()
    # dropout off, as on the Candle side (its training applies none)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0

    def run():
        q, p = mean_pool(model, *queries), mean_pool(model, *docs)
        loss = torch.nn.functional.cross_entropy(20.0 * q @ p.T, torch.arange(len(q)))
        loss.backward()
        model.zero_grad(set_to_none=True)
    report(part, timed(run, warmup, runs), runs)


def encode():
    from sentence_transformers import SentenceTransformer
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    with open(os.path.join(target, "bench-data", "encode_texts.json")) as f:
        texts = json.load(f)
    model = SentenceTransformer(MODEL, device="cpu")
    model.max_seq_length = 256
    model.encode(texts[:64], batch_size=32)
    t = timed(lambda: model.encode(texts, batch_size=32), 0, 1)
    report("encode", t, 1, texts=len(texts), texts_per_s=len(texts) / t[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("parts", nargs="*", default=["forward", "train_step", "train_step_long", "encode"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    for p in a.parts:
        {"forward": forward, "train_step": train_step, "train_step_long": train_step_long,
         "encode": encode}[p]()


if __name__ == "__main__":
    main()
