"""The LLM example's model in plain transformers, in-process, with no Serve around it: the
answer and the tokens/s that Photon's figures are compared with (tests/llm_example.rs, and the
GPU check). Run with the interpreter of the example's environment:

    python examples/llm-service/reference.py MODEL_FILE PROMPT MAX_NEW_TOKENS [REPEATS]

Prints one JSON line: {"text", "tokens", "device", "tokens_per_s"} (the median of REPEATS runs
after one warm-up)."""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llm_model import generate, load  # noqa: E402


def main(model_file, prompt, max_new_tokens, repeats=3):
    tokenizer, model, device = load(model_file)
    generate(tokenizer, model, device, prompt, max_new_tokens)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        text, tokens = generate(tokenizer, model, device, prompt, max_new_tokens)
        rates.append(tokens / (time.perf_counter() - started))
    print(json.dumps({"text": text, "tokens": tokens, "device": device, "tokens_per_s": statistics.median(rates)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *(int(a) for a in sys.argv[4:5]))
