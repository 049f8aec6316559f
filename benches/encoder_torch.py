"""PyTorch / sentence-transformers side of `make bench-encoder` (see benches/encoder.rs for the
parts; the same ids, texts, shapes and thread count, one part per process).

    python benches/encoder_torch.py --threads N [forward] [train_step] [train_step_long] [encode]

On a GPU (scripts/device_check.sh): `--device cuda --precision f32|bf16|tf32` (bf16 = autocast)
with `--model DIR --batch B --tokens T --doc-tokens D` for other shapes (the BGE-M3 shape) and
`--texts FILE` for encode; results then carry the peak GPU memory PyTorch allocated.

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
BATCH, TOKENS, DOC_TOKENS = 32, 128, 128
DEVICE, PRECISION, TEXTS = "cpu", "f32", None
CLS, SEP = 101, 102


def sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def autocast():
    on = DEVICE.startswith("cuda") and PRECISION == "bf16"
    return torch.autocast(device_type="cuda" if on else "cpu", dtype=torch.bfloat16, enabled=on)


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
           "device": DEVICE, "precision": PRECISION, "batch": BATCH, "tokens": TOKENS,
           "median_s": t[0], "min_s": t[1], "runs": runs,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
           "torch": torch.__version__}
    if DEVICE.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out.update(extra)
    print("RESULT " + json.dumps(out), flush=True)


def row(r, n):
    return [CLS] + [1000 + (r * 7919 + i * 104729) % 28000 for i in range(1, n - 1)] + [SEP]


def ids(n=None, off=0):
    return torch.tensor([row(r + off, n or TOKENS) for r in range(BATCH)]).to(DEVICE)


def padded(rows):
    """Ids and attention mask, padded with 0 to the longest row (as the Candle side batches)."""
    n = max(len(r) for r in rows)
    x = torch.tensor([r + [0] * (n - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
    return x.to(DEVICE), mask.to(DEVICE)


def mean_pool(model, x, mask):
    h = model(input_ids=x, attention_mask=mask).last_hidden_state
    v = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(v, dim=1)


def forward():
    from transformers import AutoModel
    model = AutoModel.from_pretrained(MODEL).to(DEVICE).eval()
    x = ids()
    mask = torch.ones_like(x)

    def run():
        with torch.inference_mode(), autocast():
            mean_pool(model, x, mask)
        sync()
    report("forward", timed(run, 3, 10), 10)


def train_step():
    # item texts: the queries reversed (benches/encoder.rs), or rows of their own length
    x = ids()
    d = x.flip(0) if DOC_TOKENS == TOKENS else ids(DOC_TOKENS, BATCH)
    step("train_step", (x, torch.ones_like(x)), (d, torch.ones_like(d)), 2, 5)


def train_step_long():
    """32 queries of 40-256 tokens padded to 256, 32 item texts of 110 tokens (benches/encoder.rs)."""
    queries = [row(r, 256 if r == 0 else 40 + (r * 37) % 217) for r in range(BATCH)]
    docs = [row(r + BATCH, 110) for r in range(BATCH)]
    step("train_step_long", padded(queries), padded(docs), 1, 3)


def step(part, queries, docs, warmup, runs):
    from transformers import AutoModel
    model = AutoModel.from_pretrained(MODEL).to(DEVICE).train()
    # dropout off, as on the Candle side (its training applies none)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0

    def run():
        with autocast():
            q, p = mean_pool(model, *queries), mean_pool(model, *docs)
            loss = torch.nn.functional.cross_entropy(20.0 * q.float() @ p.float().T,
                                                     torch.arange(len(q), device=DEVICE))
        loss.backward()
        model.zero_grad(set_to_none=True)
        sync()
    report(part, timed(run, warmup, runs), runs, doc_tokens=DOC_TOKENS)


def encode():
    from sentence_transformers import SentenceTransformer
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    with open(TEXTS or os.path.join(target, "bench-data", "encode_texts.json")) as f:
        texts = json.load(f)
    model = SentenceTransformer(MODEL, device=DEVICE)
    if DEVICE.startswith("cuda") and PRECISION == "bf16":
        model = model.to(torch.bfloat16)
    model.max_seq_length = 256
    model.encode(texts[:64], batch_size=32)
    t = timed(lambda: model.encode(texts, batch_size=32), 0, 1)
    report("encode", t, 1, texts=len(texts), texts_per_s=len(texts) / t[0])


def main():
    global MODEL, BATCH, TOKENS, DOC_TOKENS, DEVICE, PRECISION, TEXTS, CLS, SEP
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16", "tf32"])
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--tokens", type=int, default=TOKENS)
    ap.add_argument("--doc-tokens", type=int)
    ap.add_argument("--texts")
    ap.add_argument("parts", nargs="*", default=["forward", "train_step", "train_step_long", "encode"])
    a = ap.parse_args()
    MODEL, BATCH, TOKENS, DEVICE, PRECISION, TEXTS = a.model, a.batch, a.tokens, a.device, a.precision, a.texts
    DOC_TOKENS = a.doc_tokens or a.tokens
    with open(os.path.join(MODEL, "config.json")) as f:
        if json.load(f).get("model_type") == "xlm-roberta":
            CLS, SEP = 0, 2
    torch.backends.cuda.matmul.allow_tf32 = PRECISION == "tf32"
    torch.backends.cudnn.allow_tf32 = PRECISION == "tf32"
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    for p in a.parts:
        {"forward": forward, "train_step": train_step, "train_step_long": train_step_long,
         "encode": encode}[p]()


if __name__ == "__main__":
    main()
