#!/bin/sh
# Install the real L4 proxies that `lbsim live --via nginx|haproxy` puts in front of the
# Thrift backends: Debian's nginx with its stream module (libnginx-mod-stream) and haproxy.
# Idempotent and quiet: does nothing when both are already there. lbsim itself installs
# nothing; tests and .ci/run call this script.
#
# Debian's packages would start system services (nginx on port 80); where
# /usr/sbin/policy-rc.d forbids that (containers) nothing starts, otherwise RUNLEVEL=1 asks
# invoke-rc.d not to start them. lbsim runs its own proxy processes, with their own prefix.
set -eu

have_nginx_stream() {
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || return 1
  # Debian ships the stream module as a dynamic module loaded from modules-enabled.
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] && return 0
  # Or built in (other distributions, nginx.org builds).
  nginx -V 2>&1 | grep -q -- '--with-stream\b' && ! nginx -V 2>&1 | grep -q -- '--with-stream=dynamic'
}

have_haproxy() {
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]
}

if have_nginx_stream && have_haproxy; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-proxies: apt-get not found; install nginx (with the stream module) and haproxy with your package manager" >&2
  exit 1
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
# The package lists may be missing or stale on a fresh machine.
if ! apt-cache show libnginx-mod-stream >/dev/null 2>&1 || ! apt-cache show haproxy >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
$SUDO apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-stream haproxy >/dev/null \
  || $SUDO apt-get install -y -qq --no-install-recommends nginx libnginx-mod-stream haproxy >/dev/null

if ! have_nginx_stream; then
  echo "install-proxies: nginx is installed but its stream module is not (/usr/lib/nginx/modules/ngx_stream_module.so)" >&2
  exit 1
fi
if ! have_haproxy; then
  echo "install-proxies: haproxy is not installed" >&2
  exit 1
fi
