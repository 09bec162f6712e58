# Shared by the test scripts (sourced, not run).

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# install_packages PACKAGE...: installs Debian packages without starting the services they bring
# (the tests start their own instances).
install_packages() {
  [ $# -gt 0 ] || return 0
  echo "installing: $*"
  local policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  [ "$policy_added" -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d
  return 0
}
