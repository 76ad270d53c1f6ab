#!/usr/bin/env bash
# Set up mags on a fresh Debian 12 machine, then run `mags run 'echo Hello World'`.
# As root (or with sudo; a minimal Debian has no sudo, and root needs none):
#
#   bash scripts/setup.sh             install everything, start a server, run Hello World
#   bash scripts/setup.sh --no-demo   install everything only (used by scripts/test.sh)
#
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=1
[ "${1:-}" = "--no-demo" ] && DEMO=0

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "error: run as root, or with sudo (sandboxes need namespaces, cgroups and mounts): bash scripts/setup.sh" >&2
  exit 1
fi

# --- system packages --------------------------------------------------------------------
APT_PKGS=(iproute2 iptables debootstrap gcc libc6-dev python3-venv ca-certificates curl
          e2fsprogs openssh-client tmux wrk postgresql)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- gVisor runsc (systrap-capable build from bookworm-backports, without touching /etc/apt)
RUNSC=/usr/local/bin/runsc
if ! [ -x "$RUNSC" ] || ! "$RUNSC" flags 2>&1 | grep -q systrap; then
  say "installing gVisor runsc from bookworm-backports"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  echo "deb http://deb.debian.org/debian bookworm-backports main" > "$tmp/sources.list"
  aptopts=(-o Dir::Etc::sourcelist="$tmp/sources.list" -o Dir::Etc::sourceparts=- \
           -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root)
  apt-get "${aptopts[@]}" update -q >/dev/null
  (cd "$tmp" && apt-get "${aptopts[@]}" download runsc >/dev/null)
  dpkg -x "$tmp"/runsc_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/runsc" "$RUNSC"
  rm -rf "$tmp"
fi

# --- Python environment -------------------------------------------------------------------
if ! [ -x .venv/bin/python ]; then
  say "creating the Python virtual environment (.venv)"
  python3 -m venv .venv
fi
stamp=.venv/.mags-installed
if ! [ -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing mags and its pinned dependencies"
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[test]' 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import mags.cli.main" || { echo "error: pip install failed" >&2; exit 1; }
  touch "$stamp"
fi
ln -sf "$ROOT/.venv/bin/mags" /usr/local/bin/mags

# --- guest image and the sandbox binary ---------------------------------------------------
say "checking the guest image (built once, about 1-2 minutes)"
.venv/bin/mags image build

if [ "$DEMO" = 0 ]; then
  say "setup complete"
  exit 0
fi

# --- the main job: a server on the embedded default, and Hello World in a sandbox ----------
DATA=/var/lib/mags
# the data dir holds every tenant's data and the admin token: root only (the server tightens
# it again at every start); the log and pid file are created under the same umask
umask 077
mkdir -p "$DATA"
chmod 700 "$DATA"
if [ -f "$DATA/server.log" ]; then chmod 600 "$DATA/server.log"; fi   # left readable by an older setup
PORT=${MAGS_PORT:-8090}
if ! curl -fsS "http://127.0.0.1:$PORT/api/v1/health" >/dev/null 2>&1; then
  say "starting mags server on 127.0.0.1:$PORT (log: $DATA/server.log, root only)"
  nohup .venv/bin/mags server --data-dir "$DATA" --port "$PORT" >"$DATA/server.log" 2>&1 &
  echo $! > "$DATA/server.pid"
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$PORT/api/v1/health" >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$DATA/server.pid")" 2>/dev/null; then
      echo "error: mags server exited; see $DATA/server.log:" >&2; tail -20 "$DATA/server.log" >&2; exit 1
    fi
    sleep 0.1
  done
fi
export MAGS_API_URL="http://127.0.0.1:$PORT"
export MAGS_API_TOKEN="$(cat "$DATA/admin.token")"
say "mags run 'echo Hello World'"
.venv/bin/mags run 'echo Hello World'
say "done. The server keeps running (pid $(cat "$DATA/server.pid" 2>/dev/null || echo '?')); stop it with: kill \$(cat $DATA/server.pid)"
