#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine, when it is missing, and loads the
# kernel modules the real-kernel tests use. Run as root. Used by scripts/test.sh and .ci/run.
#   - iptables (both backends), conntrack, iproute2, python3, procps: the real-kernel tests;
#   - mmdebstrap, buildah, podman, runc: the container image (scripts/build-image.sh,
#     tests/image.rs).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
updated=0
install() {
  if [ "$updated" = 0 ]; then apt-get update -qq; updated=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v iptables-legacy-restore >/dev/null || ! command -v conntrack >/dev/null \
   || ! command -v ip >/dev/null || ! command -v python3 >/dev/null || ! command -v sysctl >/dev/null; then
  install iptables conntrack iproute2 python3 procps
fi
if ! command -v mmdebstrap >/dev/null || ! command -v buildah >/dev/null || ! command -v podman >/dev/null \
   || ! command -v runc >/dev/null; then
  install mmdebstrap buildah podman runc
fi
# Already built in on many kernels; a module that cannot be loaded is fine.
for m in br_netfilter xt_statistic xt_recent xt_comment xt_addrtype xt_conntrack xt_mark \
         nf_nat xt_MASQUERADE xt_REDIRECT iptable_nat iptable_filter ip6table_nat ip6table_filter; do
  modprobe "$m" 2>/dev/null || true
done
