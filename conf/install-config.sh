#!/bin/sh
# Install the example configuration as $1/fdistd.ini unless one exists.
set -eu
dest="${DESTDIR:-}$1/fdistd.ini"
case "$2" in
/*) src="${DESTDIR:-}$2" ;;
*) src="${DESTDIR:-}${MESON_INSTALL_PREFIX}/$2" ;;
esac
if [ -e "$dest" ]; then
	echo "fdistd: keeping the existing $dest"
	exit 0
fi
mkdir -p "$(dirname "$dest")"
install -m 0644 "$src" "$dest"
echo "fdistd: installed $dest"
