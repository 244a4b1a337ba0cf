#!/bin/sh
# ward-agent post-removal (deb: remove | purge | upgrade …; rpm: 0 = erase, 1 = upgrade).
# The agent's identity and spool (/var/lib/ward/agent) hold unsent findings: only purge
# deletes them. rpm has no purge; delete /var/lib/ward/agent by hand there.
set -e
case "$1" in
  purge)
    rm -rf /var/lib/ward/agent
    rmdir /var/lib/ward 2>/dev/null || true
    rmdir /etc/ward 2>/dev/null || true
    ;;
esac
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || true
fi
exit 0
