# Activates metajax's .venv in the current shell, creating it on first use (or when
# pyproject.toml changed): `source launch/env.sh`. Needs only python3 >= 3.11 and pip.
#
# Sourced into the caller's shell, so it changes nothing there but PATH and PYTHONPATH:
# no shell options (set -e would close the terminal on the next failing command), no cd.
# The set-up itself runs in a subshell.
_metajax_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if (
  set -euo pipefail
  cd "$_metajax_root"
  stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "metajax: setting up .venv (first run only, a few minutes) ..." >&2
    [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test]"
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
); then
  case ":$PATH:" in *":$_metajax_root/.venv/bin:"*) ;; *) export PATH="$_metajax_root/.venv/bin:$PATH" ;; esac
  case ":${PYTHONPATH:-}:" in
    *":$_metajax_root:"*) ;;
    *) export PYTHONPATH="$_metajax_root${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac
  unset _metajax_root
else
  echo "metajax: setting up .venv in $_metajax_root failed (see the pip output above)" >&2
  unset _metajax_root
  return 1 2>/dev/null || exit 1
fi
