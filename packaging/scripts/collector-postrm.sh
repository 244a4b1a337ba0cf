#!/bin/sh
# ward-collector post-removal (deb: remove | purge | upgrade …; rpm: 0 = erase, 1 = upgrade).
# /var/lib/ward/collector is the evidence store and the CA every agent trusts: only purge
# deletes it (back it up first: ward-collector backup). The `ward` user is kept so that
# files it owns elsewhere never fall to a later user with the same uid.
set -e
case "$1" in
  purge)
    rm -rf /var/lib/ward/collector
    rmdir /var/lib/ward 2>/dev/null || true
    rmdir /etc/ward 2>/dev/null || true
    ;;
esac
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || true
fi
exit 0
