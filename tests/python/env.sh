#!/usr/bin/env bash
# Prints the path of the virtual environment for tests/python/NAME/, making it
# first when it is not cached yet. The environment is keyed by a hash of the
# pinned requirements and of NAME/pip.env (settings for building packages
# from source, sourced before pip runs), lives outside the repository (under
# ${SMOLPAWS_CACHE_DIR:-~/.cache/smolpaws}/python/) and is made under a lock,
# so test binaries running at once build it once.
set -euo pipefail

name=${1:?usage: env.sh NAME}
here=$(cd "$(dirname "$0")" && pwd)
requirements="$here/$name/requirements.txt"
[ -f "$requirements" ] || { echo "no $requirements" >&2; exit 2; }

cache="${SMOLPAWS_CACHE_DIR:-$HOME/.cache/smolpaws}/python"
settings="$here/$name/pip.env"
inputs=("$requirements")
[ -f "$settings" ] && inputs+=("$settings")
venv="$cache/$name-$(cat "${inputs[@]}" | sha256sum | cut -c1-16)"
mkdir -p "$cache"
exec 9>"$cache/$name.lock"
flock 9

if [ ! -f "$venv/.complete" ]; then
    # The SDKs these tests drive need Python 3.12 or newer.
    python=""
    for candidate in python3.13 python3.12 "$(pyenv root 2>/dev/null)"/versions/3.1[2-9]*/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            python=$candidate
            break
        fi
    done
    [ -n "$python" ] || { echo "Python 3.12 or newer is needed (python3.12 or a pyenv 3.12 version)" >&2; exit 1; }

    began=$SECONDS
    echo "tests/python: making the $name environment in $venv (once)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    if [ -f "$settings" ]; then
        # shellcheck source=/dev/null
        . "$settings"
    fi
    # No wheel cache: a package built from source with other settings
    # would be reused as it is.
    "$venv/bin/pip" install --disable-pip-version-check --no-cache-dir --quiet \
        --requirement "$requirements" >&2
    touch "$venv/.complete"
    echo "tests/python: $name ready in $((SECONDS - began)) s" >&2
fi
echo "$venv"
