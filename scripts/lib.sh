# Shared by scripts/start and scripts/test.

ensure_venv() {
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Waypost needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1)." >&2
    echo "Set PYTHON=/path/to/python3.11 and run this again." >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $("$python" --version) ..." >&2
    "$python" -m venv .venv
  fi
}

# Install exactly what a lock file under requirements/ pins (hash-checked, no resolving), then
# Waypost itself in editable mode. The lock and pyproject.toml are remembered in a stamp inside
# .venv, so a later start with neither changed installs nothing.
install_locked() {
  local lock="$1" what="$2"
  local stamp=".venv/.installed-$(basename "$lock" .txt)"
  local digest
  digest=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    echo "$what: up to date ($lock unchanged since the last install)" >&2
    return
  fi
  local total  # the pins whose environment markers hold here (a lock also pins for other platforms)
  total=$(.venv/bin/python - "$lock" <<'PY'
import re, sys
from pip._vendor.packaging.markers import Marker
pin = re.compile(r"^[A-Za-z0-9][^ ;=]*==\S+(?:\s*;\s*([^\\]+?))?\s*\\?$")
found = (pin.match(line) for line in open(sys.argv[1], encoding="utf-8"))
print(sum(m.group(1) is None or Marker(m.group(1)).evaluate() for m in found if m))
PY
)
  echo "installing $what from $lock ($total pinned packages; the first time takes a few minutes) ..." >&2
  local log=.venv/pip-install.log
  if ! .venv/bin/python -m pip install --disable-pip-version-check --require-hashes --no-deps -r "$lock" 2>&1 \
      | tee "$log" | pip_progress "$total" >&2; then
    echo "pip failed; the last lines of its output ($log has all of it):" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . >&2
  echo "$digest" > "$stamp"
  echo "$what: installed" >&2
}

# pip's output as one line per package ("[12/63] boto3==1.44.18"); from its first error on,
# everything it says is passed through as it is (and install_locked keeps the whole of it).
pip_progress() {
  awk -v total="$1" '
    failing { print; fflush(); next }
    /^(ERROR|error)/ { failing = 1; print; fflush(); next }
    /^(Collecting|Requirement already satisfied:) / {
      n++; name = ($1 == "Collecting") ? $2 : $4
      printf "  [%d/%d] %s\n", n, total, name; fflush(); next
    }
    /^Installing collected packages/ { print "  unpacking into .venv ..."; fflush() }
  '
}

# Wait, with a deadline, while another apt or dpkg holds the package manager's locks (an
# unattended upgrade, another install), saying so once. apt-get's own DPkg::Lock::Timeout covers
# the dpkg lock while installing, but not the lists lock of `apt-get update`, which gives up at once.
wait_for_package_manager() {
  local limit="${WAYPOST_APT_LOCK_WAIT:-600}" waited=0 said=""
  while ! .venv/bin/python - <<'PY'
import fcntl, os, sys
for path in ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock",
             "/var/cache/apt/archives/lock"):
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        continue
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # apt and dpkg take these fcntl locks
    except OSError:
        sys.exit(1)
    finally:
        os.close(fd)
PY
  do
    if [ -z "$said" ]; then
      echo "waiting for the package manager: another apt or dpkg holds its lock (up to ${limit}s) ..." >&2
      said=1
    fi
    if [ "$waited" -ge "$limit" ]; then
      echo "the package manager's lock was still held after ${limit}s; run this again when it is free" >&2
      echo "(or set WAYPOST_APT_LOCK_WAIT to wait longer)" >&2
      exit 1
    fi
    sleep 2
    waited=$((waited + 2))
  done
  [ -z "$said" ] || echo "the package manager is free again" >&2
}

# Debian packages the tests drive: Chromium for the browser tests (Playwright, no browser
# download), swaks for the README's own example, Node.js for the AWS CDK (jsii runs the CDK's
# JavaScript when deploy/aws is synthesized). As root on a Debian machine they are installed
# when missing; elsewhere the message says what to do.
ensure_test_packages() {
  local chromium="${WAYPOST_CHROMIUM:-/usr/bin/chromium}" missing=()
  [ -x "$chromium" ] || missing+=(chromium fonts-dejavu-core)
  command -v swaks >/dev/null 2>&1 || missing+=(swaks)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  if [ ${#missing[@]} -eq 0 ]; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages for the tests: ${missing[*]} ..." >&2
    local wait_lock=(-o "DPkg::Lock::Timeout=${WAYPOST_APT_LOCK_WAIT:-600}")
    wait_for_package_manager
    apt-get "${wait_lock[@]}" update -qq >&2
    wait_for_package_manager
    DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq "${missing[@]}" >&2
  else
    echo "The tests need these Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]});" >&2
    echo "set WAYPOST_CHROMIUM to use another Chromium binary." >&2
    exit 1
  fi
}
