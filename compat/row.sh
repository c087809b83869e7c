#!/usr/bin/env bash
# One row of the support matrix (docs/compatibility.md): `compat/row.sh build ROW` creates the row's virtualenv once,
# cached under $COMPAT_DIR/ROW and keyed on compat/ROW.txt (a changed file rebuilds it); `compat/row.sh test ROW`
# builds it if needed, installs this checkout there (no dependencies: the row file pins them) and runs the fast suite.
# COMPAT_DIR defaults to .compat (gitignored); point it at another checkout's .compat to re-use its environments.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?usage: compat/row.sh build|test ROW [pytest args]}
row=${2:?usage: compat/row.sh build|test ROW [pytest args]}
shift 2
requirements="compat/$row.txt"
test -f "$requirements" || { echo "no such row: $requirements" >&2; exit 2; }
python=$(sed -n 's/^# python: *//p' "$requirements")
if ! "$python" -c pass 2>/dev/null && command -v pyenv >/dev/null; then
    # pyenv's shim runs only the versions selected; every installed one is selectable for this call
    PYENV_VERSION=$(pyenv versions --bare | paste -sd: -)
    export PYENV_VERSION
fi
env_dir="${COMPAT_DIR:-.compat}/$row"
key=$(sha256sum "$requirements" | cut -d' ' -f1)

if [ "$(cat "$env_dir/.key" 2>/dev/null)" != "$key" ]; then
    rm -rf "$env_dir"
    "$python" -m venv "$env_dir"
    "$env_dir/bin/python" -m pip install -q --upgrade pip
    # The row pins its torch exactly: a pip constraint of this machine's (a cap below the newest torch) must not
    # veto it, so the constraints of pip's configuration are replaced by none for this install alone.
    PIP_CONSTRAINT=/dev/null "$env_dir/bin/python" -m pip install -r "$requirements"
    "$env_dir/bin/python" -m pip freeze > "$env_dir/freeze.txt"
    echo "$key" > "$env_dir/.key"
fi
if [ "$action" = build ]; then exit 0; fi

"$env_dir/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
echo "row $row: $("$env_dir/bin/python" -c 'import platform, torch, stable_baselines3 as sb3, sb3_contrib, gymnasium, numpy
print(f"Python {platform.python_version()}, torch {torch.__version__}, SB3 {sb3.__version__}, sb3-contrib {sb3_contrib.__version__}, gymnasium {gymnasium.__version__}, numpy {numpy.__version__}")')"
exec "$env_dir/bin/python" -m pytest -n 2 -m "not slow" -rs -p no:cacheprovider "$@"
