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

# The browser tests drive Debian's Chromium (Playwright, no browser download). As root on a
# Debian machine it is installed when missing; elsewhere the message says what to do.
ensure_chromium() {
  local chromium="${WAYPOST_CHROMIUM:-/usr/bin/chromium}"
  if [ -x "$chromium" ]; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests ..." >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >&2
  else
    echo "The browser tests need Chromium at $chromium: install Debian's chromium package" >&2
    echo "(sudo apt-get install chromium) or set WAYPOST_CHROMIUM to another Chromium binary." >&2
    exit 1
  fi
}
