#!/bin/sh
# ward-agent pre-removal (deb: remove | upgrade NEW | deconfigure | failed-upgrade;
# rpm: 0 = erase, 1 = upgrade). Stops and disables the agent only when it is removed; an
# upgrade restarts it in postinst instead, so the agent is down for one restart only.
set -e
case "$1" in
  remove|0)
    if command -v systemctl >/dev/null 2>&1; then
      if [ -d /run/systemd/system ]; then
        systemctl stop ward-agent.service || true
      fi
      systemctl disable ward-agent.service >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
