#!/usr/bin/env bash
# Install svae_lite on Colab at the versions the book is built and tested with
# (requirements.txt), keeping Colab's own CUDA build of torch (requirements.txt pins the CPU
# build used by CI). The first code cell of every chapter runs this after cloning.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -v '^torch==' requirements.txt > /tmp/svae_lite_requirements.txt
pip install -q -r /tmp/svae_lite_requirements.txt
pip install -q --no-deps .
