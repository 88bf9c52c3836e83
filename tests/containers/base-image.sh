#!/usr/bin/env bash
# Makes the Debian 12 base image locally, for machines that cannot pull from Docker Hub:
# debootstrap (minbase) → podman import, tagged docker.io/library/debian:bookworm-slim and
# docker.io/library/debian:bookworm, the two names deploy/Dockerfile builds FROM. Slimmed the
# way the official -slim image is: no documentation, man pages or locales, and no apt caches
# (also for packages installed later in images built on it).
#
# Usage: tests/containers/base-image.sh [--force]
#   Does nothing when debian:bookworm-slim exists already, unless --force. Needs root,
#   debootstrap and podman, and the network to reach deb.debian.org.
set -euo pipefail

slim=docker.io/library/debian:bookworm-slim
full=docker.io/library/debian:bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${1:-}" != "--force" ] && podman image exists "$slim"; then
  podman image exists "$full" || podman tag "$slim" "$full"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }

dir=$(mktemp -d /tmp/triplane-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT

echo "base-image: debootstrap --variant=minbase bookworm ($mirror)" >&2
timeout 900 debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 \
  || { tail -n 30 "$dir.log" >&2; rm -f "$dir.log"; exit 1; }
rm -f "$dir.log"

# What the official image sets up: the three suites, and apt and dpkg told to keep no caches,
# documentation or translations.
rm -f "$dir/etc/apt/sources.list"
cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$dir/etc/apt/apt.conf.d/docker-no-languages"
echo 'APT::Install-Recommends "false";' >"$dir/etc/apt/apt.conf.d/docker-no-recommends"
cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/* "$dir"/usr/share/groff/* \
       "$dir"/usr/share/lintian/* "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin \
       "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log "$dir"/var/log/apt/* "$dir"/tmp/* "$dir"/root/.bash_history
: >"$dir/etc/machine-id" 2>/dev/null || true

echo "base-image: importing as $slim and $full" >&2
tar --numeric-owner -C "$dir" -c . \
  | podman import --quiet --change 'CMD ["bash"]' --message "debootstrap --variant=minbase bookworm (slimmed)" - "$slim" >/dev/null
podman tag "$slim" "$full"
podman image inspect --format '{{.Size}}' "$slim" | awk '{ printf "base-image: %s is %.1f MB\n", "'"$slim"'", $1 / 1e6 }' >&2
