#!/usr/bin/env python3
"""A randomly initialised XLM-RoBERTa encoder in Hugging Face layout, from a seed: the weights of
the BGE-M3 shape for speed checks (weights too big to carry are made on the machine that runs
the check; both sides, Candle and PyTorch, load this same file).

    random_model.py OUT_DIR [--layers 24 --hidden 1024 --heads 16 --ffn 4096 --vocab 250002] [--seed 0]

With PyTorch and transformers present the model is transformers' own XLMRobertaModel init;
without them (a CPU machine with neither) the weights are N(0, 0.02) from Python's `random`
(slow: keep the shape small). The tokenizer is the tiny XLM-R fixture's (the checks feed token
ids; the tokenizer only supplies the special ids).
"""
import argparse
import array
import json
import os
import random
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "tests", "fixtures", "encoder", "tiny-xlmr", "tokenizer.json")


def config(a):
    return {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "vocab_size": a.vocab, "hidden_size": a.hidden, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "intermediate_size": a.ffn, "hidden_act": "gelu",
        "max_position_embeddings": 8194, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "position_embedding_type": "absolute",
    }


def shapes(a):
    h, f = a.hidden, a.ffn
    out = [("embeddings.word_embeddings.weight", (a.vocab, h)),
           ("embeddings.position_embeddings.weight", (8194, h)),
           ("embeddings.token_type_embeddings.weight", (1, h)),
           ("embeddings.LayerNorm.weight", (h,)), ("embeddings.LayerNorm.bias", (h,))]
    for i in range(a.layers):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            out += [(p + f"attention.self.{n}.weight", (h, h)), (p + f"attention.self.{n}.bias", (h,))]
        out += [(p + "attention.output.dense.weight", (h, h)), (p + "attention.output.dense.bias", (h,)),
                (p + "attention.output.LayerNorm.weight", (h,)), (p + "attention.output.LayerNorm.bias", (h,)),
                (p + "intermediate.dense.weight", (f, h)), (p + "intermediate.dense.bias", (f,)),
                (p + "output.dense.weight", (h, f)), (p + "output.dense.bias", (h,)),
                (p + "output.LayerNorm.weight", (h,)), (p + "output.LayerNorm.bias", (h,))]
    return out


def pure_python(a, path):
    rng = random.Random(a.seed)
    header, blobs, offset = {}, [], 0
    for name, shape in shapes(a):
        n = 1
        for d in shape:
            n *= d
        if name.endswith("LayerNorm.weight"):
            data = array.array("f", [1.0]) * n
        elif name.endswith(".bias") or "LayerNorm" in name:
            data = array.array("f", [0.0]) * n
        else:
            data = array.array("f", (rng.gauss(0.0, 0.02) for _ in range(n)))
        b = data.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--ffn", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=250002)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cfg = config(a)
    try:
        import torch
        from transformers import XLMRobertaConfig, XLMRobertaModel
        torch.manual_seed(a.seed)
        model = XLMRobertaModel(XLMRobertaConfig(**cfg), add_pooling_layer=False)
        model.save_pretrained(a.out, safe_serialization=True)
    except ImportError:
        pure_python(a, os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    shutil.copy(TOKENIZER, os.path.join(a.out, "tokenizer.json"))
    print(f"random_model: {a.out} ({a.layers} layers, hidden {a.hidden}, vocab {a.vocab}, seed {a.seed})")


if __name__ == "__main__":
    main()
