#!/bin/sh
# ward-agent post-install (deb: configure [old-version]; rpm: 1 = install, 2 = upgrade).
# Enables the unit on first install but never starts an agent that is not enrolled (the
# unit's ConditionPathExists= keeps it down until `ward-agent enroll` has run); on upgrade
# it restarts a running agent, whose spool carries anything unsent across the restart.
set -e
first_install=no
case "$1" in
  configure) [ -z "$2" ] && first_install=yes ;;
  1) first_install=yes ;;
  2) ;;
  *) exit 0 ;;
esac
install -d -m 0700 /var/lib/ward/agent
if command -v systemctl >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
  if [ "$first_install" = yes ]; then
    systemctl enable ward-agent.service >/dev/null 2>&1 || true
  fi
  if [ -d /run/systemd/system ]; then
    if [ "$first_install" = yes ] && [ -s /var/lib/ward/agent/identity/identity.json ]; then
      systemctl start ward-agent.service || true
    elif [ "$first_install" = no ]; then
      systemctl try-restart ward-agent.service || true
    fi
  fi
fi
if [ "$first_install" = yes ] && [ ! -s /var/lib/ward/agent/identity/identity.json ]; then
  echo "ward-agent: installed. Check this machine with 'ward-agent doctor', then enrol it:"
  echo "  ward-agent enroll --collector HOST:7443 --token-file FILE --ca-pin sha256:HEX && systemctl start ward-agent"
fi
exit 0
