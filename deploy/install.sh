#!/usr/bin/env bash
# Installs stackhive on a bare-metal machine (a blade): the binaries into /usr/local/bin, the
# `stackhive` user (the coordinator runs as it) and the `stackhive-jobs` user (workers run shell
# jobs as it, STACKHIVE_RUN_AS), /etc/stackhive with the example settings, and the systemd units.
# It enables and starts nothing: fill /etc/stackhive/*.env first (deploy/README.md). Running it
# again changes only what differs; settings files that exist are never overwritten.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/install.sh [--bin-dir DIR] [--root DIR] [--venv DIR] [--dry-run]

  --bin-dir DIR  where the built binaries are (default: target/release of this checkout);
                 stackhive and stackhive-worker are required, stackhive-trainer and
                 stackhive-stacker are installed when present
  --root DIR     install under DIR instead of / (an image, a test): users are not created,
                 ownership is not set and systemd is not reloaded
  --venv DIR     also make a Python environment at DIR with the workers' native libraries
                 (libtorch, XGBoost, CatBoost; several GB from the Python package index) and
                 point /etc/stackhive/worker.env at it (LD_LIBRARY_PATH, STACKHIVE_PYTHON);
                 not with --root
  --dry-run      print what would be done and change nothing
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin_dir="$here/../target/release"
root=/
venv=
dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=${2:?--bin-dir needs a folder}; shift 2 ;;
        --root) root=${2:?--root needs a folder}; shift 2 ;;
        --venv) venv=${2:?--venv needs a folder}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown option $1 (expected --bin-dir, --root, --venv, --dry-run)" >&2; exit 2 ;;
    esac
done
root=${root%/}
system=0
if [ -z "$root" ]; then
    system=1
elif [ -n "$venv" ]; then
    # A virtual environment holds its own absolute path: it cannot be made under another root.
    echo "error: --venv installs into this system; it does not go with --root" >&2
    exit 2
elif [ ! -d "$root" ]; then
    echo "error: --root $root is not a folder" >&2
    exit 2
fi
if [ "$system" = 1 ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "error: installing into / needs root (or use --root DIR, --dry-run)" >&2
    exit 1
fi
for required in stackhive stackhive-worker; do
    if [ ! -x "$bin_dir/$required" ]; then
        echo "error: $bin_dir/$required not found; build it (cargo build --release -p stackhive-cli -p stackhive-worker) or pass --bin-dir" >&2
        exit 1
    fi
done

say() { printf '%s\n' "$*"; }
# Runs a command, or only prints it with --dry-run.
act() {
    say "+ $*"
    if [ "$dry_run" = 0 ]; then
        "$@"
    fi
}

# Copies $1 to $2 with mode $3 unless $2 already has the same content.
put() {
    local src=$1 dst=$2 mode=$3
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        say "  unchanged $dst"
        return 1
    fi
    act install -D -m "$mode" "$src" "$dst"
}

# A folder with a mode, and with an owner and group when installing into the system.
folder() {
    local dir=$1 mode=$2 owner=$3
    if [ "$system" = 1 ]; then
        act install -d -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$dir"
    elif [ ! -d "$dir" ]; then
        act install -d -m "$mode" "$dir"
    fi
}

# A system user without a home or a login shell, unless it exists.
user() {
    local name=$1
    if getent passwd "$name" >/dev/null; then
        say "  user $name exists"
    else
        act useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$name"
    fi
}

# Sets KEY=VALUE in an environment file: replaces the key's line, or appends one.
set_env() {
    local file=$1 key=$2 value=$3
    if [ "$dry_run" = 1 ] && [ ! -f "$file" ]; then
        say "+ set $key=$value in $file"
        return
    fi
    if grep -qxF "$key=$value" "$file"; then
        say "  $key already set in $file"
    elif grep -q "^$key=" "$file"; then
        act sed -i "s|^$key=.*|$key=$value|" "$file"
    else
        say "+ append $key=$value to $file"
        if [ "$dry_run" = 0 ]; then
            printf '%s=%s\n' "$key" "$value" >>"$file"
        fi
    fi
}

say "binaries -> $root/usr/local/bin"
for name in stackhive stackhive-worker stackhive-trainer stackhive-stacker; do
    if [ -x "$bin_dir/$name" ]; then
        put "$bin_dir/$name" "$root/usr/local/bin/$name" 0755 || true
    else
        # The worker offers `cnn` / `stack` jobs only with the binary next to it.
        say "  no $bin_dir/$name: this machine's worker will not offer its job kinds"
    fi
done

if [ "$system" = 1 ]; then
    say "users"
    user stackhive
    user stackhive-jobs
fi

say "settings -> $root/etc/stackhive"
# The coordinator (user stackhive) reads its TLS key; env files may hold the database password.
folder "$root/etc/stackhive" 0750 root:stackhive
folder "$root/etc/stackhive/tls" 0750 root:stackhive
for role in coordinator worker; do
    if [ -f "$root/etc/stackhive/$role.env" ]; then
        say "  kept $root/etc/stackhive/$role.env"
    else
        if [ "$system" = 1 ]; then
            act install -m 0640 -o root -g stackhive "$here/$role.env.example" "$root/etc/stackhive/$role.env"
        else
            act install -m 0640 "$here/$role.env.example" "$root/etc/stackhive/$role.env"
        fi
    fi
done

say "systemd units -> $root/etc/systemd/system"
units_changed=0
for unit in stackhive-coordinator.service stackhive-worker.service; do
    if put "$here/$unit" "$root/etc/systemd/system/$unit" 0644; then
        units_changed=1
    fi
done
if [ "$units_changed" = 1 ] && [ "$system" = 1 ] && [ -d /run/systemd/system ]; then
    act systemctl daemon-reload
fi

if [ -n "$venv" ]; then
    say "python environment -> $venv"
    if [ ! -x "$venv/bin/python" ]; then
        act python3 -m venv "$venv"
    fi
    # The versions scripts/setup.sh builds against (ensure_libtorch, ensure_level2).
    act "$venv/bin/python" -m pip install --quiet torch==2.11.0 xgboost-cpu==3.2.0 catboost==1.2.10
    if [ "$dry_run" = 0 ]; then
        site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    else
        site="$venv/lib/pythonX.Y/site-packages"
    fi
    # The trainer and the stacker carry a RUNPATH to the build machine's libraries; here they
    # find libtorch and libxgboost through this instead.
    set_env /etc/stackhive/worker.env LD_LIBRARY_PATH "$site/torch/lib:$site/xgboost/lib"
    set_env /etc/stackhive/worker.env STACKHIVE_PYTHON "$venv/bin/python"
fi

cat <<EOF
done. Next:
  edit $root/etc/stackhive/coordinator.env and/or worker.env; put certificates in $root/etc/stackhive/tls
  systemctl enable --now stackhive-coordinator    # on coordinator machines
  systemctl enable --now stackhive-worker         # on worker machines
EOF
