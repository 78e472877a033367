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
