#!/usr/bin/env python3
"""Embedding throughput: Photon's SentenceEmbedding over HTTP, and reference runtimes on the
same sentences, in one process so one table compares them.

  embed_bench.py photon URL [--batches 1,8,32] [--seconds S] [--clients C]
      POSTs {"input": [B sentences]} to URL (e.g. http://127.0.0.1:8000/v1/embeddings)
      from C clients on keep-alive connections for S seconds per batch size.
  embed_bench.py sentence-transformers MODEL_DIR [--device cpu|cuda] [--dtype float32] [--batches ...]
      SentenceTransformer(MODEL_DIR).encode(sentences, batch_size=B) for S seconds per size.
  embed_bench.py onnxruntime MODEL_DIR [--batches ...]
      The same model exported to ONNX (needs torch for the export), run by onnxruntime's CPU
      provider with the tokenizer from MODEL_DIR, mean pooling and L2 normalisation in numpy.
  embed_bench.py check URL REFERENCE_JSON [--min-cosine 0.9999] [--max-abs D]
      Embeds the reference sentences through URL and compares them with the reference vectors.

Each run prints one line per batch size: `RESULT runtime batch embeddings_per_s`.
Needs only the standard library for `photon` and `check` (numpy for the others).
"""
import argparse
import http.client
import json
import math
import sys
import threading
import time
import urllib.parse

WORDS = ("the quick brown fox jumps over a lazy dog while model servers answer many small "
         "requests about weather stadiums sunny days lovely mornings and capital cities").split()


def corpus(n=4096):
    """Deterministic sentences of 6 to 30 words."""
    out, state = [], 12345
    for i in range(n):
        state = (state * 1103515245 + 12345) % (1 << 31)
        length = 6 + state % 25
        out.append(" ".join(WORDS[(state // 7 + j * 5 + i) % len(WORDS)] for j in range(length)).capitalize() + ".")
    return out


def post(conn, path, body):
    conn.request("POST", path, body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
    return data


def bench_photon(url, batches, seconds, clients):
    u = urllib.parse.urlparse(url)
    sentences = corpus()
    for b in batches:
        done = [0] * clients
        stop = time.monotonic() + seconds

        def worker(k):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            i = k * 997
            while time.monotonic() < stop:
                chunk = [sentences[(i + j) % len(sentences)] for j in range(b)]
                i += b
                post(conn, u.path, json.dumps({"input": chunk}))
                done[k] += b

        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        post(conn, u.path, json.dumps({"input": sentences[:b]}))  # warm-up
        start = time.monotonic()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        print(f"RESULT photon {b} {sum(done) / elapsed:.1f}", flush=True)


def timed_runs(name, encode, batches, seconds):
    sentences = corpus()
    for b in batches:
        encode(sentences[:b], b)  # warm-up
        done, i, start = 0, 0, time.monotonic()
        while time.monotonic() - start < seconds:
            chunk = [sentences[(i + j) % len(sentences)] for j in range(b)]
            i += b
            encode(chunk, b)
            done += b
        print(f"RESULT {name} {b} {done / (time.monotonic() - start):.1f}", flush=True)


def bench_st(model_dir, device, dtype, batches, seconds):
    import torch
    from sentence_transformers import SentenceTransformer
    # Computed in `dtype` whatever the file stores (recent transformers keep a float16 file's
    # float16 unless told otherwise).
    model = SentenceTransformer(model_dir, device=device, model_kwargs={"dtype": getattr(torch, dtype)})

    def encode(chunk, b):
        model.encode(chunk, batch_size=b, convert_to_numpy=True)

    suffix = "" if dtype == "float32" else f"-{dtype}"
    timed_runs(f"sentence-transformers-{device}{suffix}", encode, batches, seconds)


def bench_onnx(model_dir, batches, seconds):
    import os
    import tempfile

    import numpy as np
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    model = Encoder(AutoModel.from_pretrained(model_dir, dtype=torch.float32)).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    torch.onnx.export(model, (ids, ids, torch.zeros_like(ids)), path, dynamo=False,
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["hidden"],
                      dynamic_axes={n: {0: "b", 1: "s"} for n in ["input_ids", "attention_mask", "token_type_ids", "hidden"]},
                      opset_version=17)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding()

    def encode(chunk, b):
        enc = tok.encode_batch(chunk)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        m = mask[..., None].astype(np.float32)
        mean = (hidden * m).sum(1) / m.sum(1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    timed_runs("onnxruntime-cpu", encode, batches, seconds)


def check(url, reference_path, min_cosine, max_abs):
    ref = json.load(open(reference_path))
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    got = json.loads(post(conn, u.path, json.dumps({"input": ref["sentences"]})))["data"]
    ok = True
    for i, (g, e) in enumerate(zip(got, ref["vectors"])):
        g = g["embedding"]
        dot = sum(a * b for a, b in zip(g, e))
        cos = dot / (math.sqrt(sum(a * a for a in g)) * math.sqrt(sum(b * b for b in e)))
        worst = max(abs(a - b) for a, b in zip(g, e))
        good = cos >= min_cosine and (max_abs is None or worst <= max_abs)
        ok &= good
        print(f"CHECK sentence {i}: cosine {cos:.7f}, largest component difference {worst:.2e}: {'ok' if good else 'FAIL'}")
    return ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["photon", "sentence-transformers", "onnxruntime", "check"])
    p.add_argument("target")
    p.add_argument("reference", nargs="?")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="sentence-transformers compute dtype")
    p.add_argument("--min-cosine", type=float, default=0.9999)
    p.add_argument("--max-abs", type=float, default=None)
    a = p.parse_args()
    batches = [int(x) for x in a.batches.split(",")]
    if a.mode == "photon":
        bench_photon(a.target, batches, a.seconds, a.clients)
    elif a.mode == "sentence-transformers":
        bench_st(a.target, a.device, a.dtype, batches, a.seconds)
    elif a.mode == "onnxruntime":
        bench_onnx(a.target, batches, a.seconds)
    else:
        sys.exit(0 if check(a.target, a.reference, a.min_cosine, a.max_abs) else 1)


if __name__ == "__main__":
    main()
