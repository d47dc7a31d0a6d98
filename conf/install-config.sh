#!/bin/sh
# Install the example configuration as $1/fdistd.ini unless one exists.
set -eu
dest="${DESTDIR:-}$1/fdistd.ini"
case "$2" in
/*) src="${DESTDIR:-}$2" ;;
*) src="${DESTDIR:-}${MESON_INSTALL_PREFIX}/$2" ;;
esac

# meson install before 1.2 (Debian 12 has 1.0) shows an install script's
# output only when it fails, and an administrator must learn that the
# file was kept: so on the terminal, if there is one.
say() {
	[ -n "${MESON_INSTALL_QUIET:-}" ] && return 0
	if [ ! -t 1 ] && { printf 'fdistd: %s\n' "$1" >/dev/tty; } 2>/dev/null; then
		return 0
	fi
	printf 'fdistd: %s\n' "$1"
}

if [ -e "$dest" ]; then
	say "keeping the existing $dest; the new example is $src"
	exit 0
fi
mkdir -p "$(dirname "$dest")"
install -m 0644 "$src" "$dest"
say "installed the example configuration as $dest"
