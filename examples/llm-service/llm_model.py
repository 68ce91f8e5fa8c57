"""The model of the LLM example, apart from Serve: loading a GGUF file with transformers and
greedy generation (serve_app.py serves it; reference.py measures it in-process)."""

import os


def load(model_file):
    """The tokenizer and the model of a GGUF file, on the GPU if this process has one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = os.path.split(os.path.abspath(model_file))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name).to(device)
    return tokenizer, model, device


def generate(tokenizer, model, device, prompt, max_new_tokens):
    """Greedy decoding of the prompt as a chat turn: the answer's text and token count."""
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(device)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0][inputs["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True), len(new_tokens)
