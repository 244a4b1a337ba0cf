#!/bin/sh
# ward-collector pre-removal (deb: remove | upgrade NEW …; rpm: 0 = erase, 1 = upgrade).
set -e
case "$1" in
  remove|0)
    if command -v systemctl >/dev/null 2>&1; then
      if [ -d /run/systemd/system ]; then
        systemctl stop ward-collector.service || true
      fi
      systemctl disable ward-collector.service >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
