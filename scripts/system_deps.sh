#!/usr/bin/env bash
# System packages the integration and browser tests need (Debian). Run as root; idempotent.
# CI (.ci/run) calls it on a fresh machine before the test command; a developer machine that
# already has them pays one quick dpkg check.
set -euo pipefail
packages=(
  chromium          # viewer end-to-end tests (Playwright drives it through executable_path)
  dicom3tools       # dciodvfy validates every DICOM object we write
  orthanc           # DICOMweb push integration test
  orthanc-dicomweb
  redis-server      # durable jobs (cluster integration tests)
  nginx             # reverse proxy in front of API replicas
  prometheus        # promtool check metrics
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "system_deps: missing ${missing[*]}; run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
