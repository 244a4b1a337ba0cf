#!/bin/sh
# ward-collector post-install (deb: configure [old-version]; rpm: 1 = install, 2 = upgrade).
# Creates the unprivileged `ward` system user and the state directory it owns, enables and
# starts the collector on first install (it makes its CA on first start) and restarts a
# running collector on upgrade.
set -e
first_install=no
case "$1" in
  configure) [ -z "$2" ] && first_install=yes ;;
  1) first_install=yes ;;
  2) ;;
  *) exit 0 ;;
esac
if ! getent passwd ward >/dev/null 2>&1; then
  nologin=/usr/sbin/nologin
  [ -x "$nologin" ] || nologin=/sbin/nologin
  useradd --system --user-group --home-dir /var/lib/ward/collector --no-create-home \
    --shell "$nologin" --comment "Ward collector" ward
fi
install -d -m 0755 /var/lib/ward
install -d -m 0700 -o ward -g ward /var/lib/ward/collector
if command -v systemctl >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
  if [ "$first_install" = yes ]; then
    systemctl enable ward-collector.service >/dev/null 2>&1 || true
  fi
  if [ -d /run/systemd/system ]; then
    if [ "$first_install" = yes ]; then
      systemctl start ward-collector.service || true
    else
      systemctl try-restart ward-collector.service || true
    fi
  fi
fi
exit 0
