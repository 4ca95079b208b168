#!/usr/bin/env bash
# Set-up and entry point for a fresh Debian 12 / Raspberry Pi OS machine.
#   ./dev.sh demo   install what is missing, then run the demo (sandbox + simulated receiver + daemon)
#   ./dev.sh test   install what is missing, then run ruff and the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

# systemd: systemd-analyze and systemd-tmpfiles, which tests/systemd runs on the unit (a
# minimal image may lack it; installing it needs no running systemd).
APT_PACKAGES=(mosquitto mosquitto-clients socat gpsd faketime python3-venv systemd openssl)
VENV=.venv

need_apt() {
    command -v mosquitto >/dev/null && command -v socat >/dev/null \
        && { command -v gpsd >/dev/null || [ -x /usr/sbin/gpsd ]; } \
        && compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null \
        && command -v systemd-analyze >/dev/null && command -v openssl >/dev/null && return 1
    return 0
}

install_apt() {
    if ! need_apt; then return; fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "==> installing ${APT_PACKAGES[*]} (apt)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${APT_PACKAGES[@]}" >/dev/null
    # The packages enable their system services; the gateway's tests start their own
    # instances on free loopback ports and never use the system ones.
}

pick_python() {
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null \
            && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"; return
        fi
    done
    echo "Python 3.11 or newer is required (Debian 12 ships 3.11: apt install python3)" >&2
    exit 1
}

install_venv() {
    local stamp="$VENV/.installed" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
    local py; py=$(pick_python)
    echo "==> creating $VENV with $($py --version)"
    "$py" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
    echo "$want" > "$stamp"
}

case "${1:-}" in
    demo)
        install_apt; install_venv
        exec "$VENV/bin/aura-gateway" demo
        ;;
    test)
        install_apt; install_venv
        "$VENV/bin/ruff" check .
        exec "$VENV/bin/pytest" -q -p no:cacheprovider
        ;;
    *)
        echo "usage: ./dev.sh demo | ./dev.sh test" >&2
        exit 2
        ;;
esac
