#!/bin/bash
# Installs podvisor on a node from a built checkout (hack/install-deps and
# hack/build-guest-image have run): the code and its runtime dependencies, the
# guest image, the config, the systemd unit and the kubelet drop-in.
#
#   deploy/install.sh [--enable] [--destdir DIR] [--prefix DIR] [--confdir DIR]
#                     [--bindir DIR] [--unitdir DIR] [--kubelet-dropin-dir DIR] [--guest-dir DIR]
#
# Defaults: /usr/local/lib/podvisor, /etc/podvisor, /usr/local/bin,
# /etc/systemd/system, /etc/kubernetes/kubelet.conf.d. An existing
# config.toml is kept. --destdir DIR writes everything under DIR while the
# installed files name the real paths (the installer DaemonSet mounts the
# node's directories under /host). --enable also runs systemctl daemon-reload and
# enable --now podvisord (kubelet must then be restarted to use the drop-in).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=/usr/local/lib/podvisor
confdir=/etc/podvisor
bindir=/usr/local/bin
unitdir=/etc/systemd/system
dropindir=/etc/kubernetes/kubelet.conf.d
guestdir=${PODVISOR_GUEST_DIR:-$src/out/guest}
enable=no
destdir=

die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
	case "$1" in
	--destdir) destdir=$2; shift 2 ;;
	--prefix) prefix=$2; shift 2 ;;
	--confdir) confdir=$2; shift 2 ;;
	--bindir) bindir=$2; shift 2 ;;
	--unitdir) unitdir=$2; shift 2 ;;
	--kubelet-dropin-dir) dropindir=$2; shift 2 ;;
	--guest-dir) guestdir=$2; shift 2 ;;
	--enable) enable=yes; shift ;;
	-h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
done
for d in "$prefix" "$confdir" "$bindir" "$unitdir" "$dropindir"; do
	case "$d" in /*) ;; *) die "$d: directories must be absolute" ;; esac
done
[ -f "$guestdir/manifest.json" ] || die "no guest image in $guestdir: run hack/build-guest-image first"
[ -d "$src/node_modules/tsx" ] || die "no node_modules in $src: run hack/install-deps first"
node_bin=$(command -v node) || die "node (>= 20) is not installed here"

[ -z "$destdir" ] || [ "$enable" = no ] || die "--enable and --destdir do not mix: enable on the node itself"
# Where files go (under --destdir) vs the paths they name (the node's own).
P=$destdir$prefix C=$destdir$confdir B=$destdir$bindir U=$destdir$unitdir K=$destdir$dropindir

echo "installing podvisor into $P"
# A fresh tree beside the old one, then a rename: a running podvisord keeps its files until it restarts.
stage="$P.new.$$"
npm_cache=$(mktemp -d)
trap 'rm -rf "$stage" "$npm_cache"' EXIT
mkdir -p "$stage"
cp -a "$src/package.json" "$src/package-lock.json" "$src/tsconfig.json" "$src/README.md" "$src/bin" "$src/src" "$src/agent" "$src/proto" "$src/deploy" "$stage/"
cp -a "$src/node_modules" "$stage/"
# Development tools (TypeScript, test libraries) stay out of the node; npm prune needs no network.
(cd "$stage" && npm prune --omit=dev --no-audit --no-fund --cache "$npm_cache" >/dev/null)
# The node that runs podvisord comes along, so the host needs none of its own (the installer image's node when run from the DaemonSet).
cp "$(readlink -f "$node_bin")" "$stage/node"
mkdir -p "$stage/guest"
cp -a "$guestdir/." "$stage/guest/"
chmod -R go-w "$stage"
if [ -d "$P" ]; then rm -rf "$P.old"; mv "$P" "$P.old"; fi
mkdir -p "$(dirname "$P")"
mv "$stage" "$P"
rm -rf "$P.old" "$npm_cache"
trap - EXIT

subst() { sed -e "s#@PREFIX@#$prefix#g" -e "s#@CONFDIR@#$confdir#g" -e "s#@BINDIR@#$bindir#g" "$1"; }

mkdir -p "$B"
for cmd in podvisor podvisord; do
	printf '#!/bin/sh\nexec %s/node %s/bin/%s.js "$@"\n' "$prefix" "$prefix" "$cmd" > "$B/$cmd"
	chmod 0755 "$B/$cmd"
done

mkdir -p "$C"
chmod 0755 "$C"
if [ -e "$C/config.toml" ]; then
	echo "keeping $C/config.toml"
else
	subst "$src/deploy/config.toml" > "$C/config.toml"
	chmod 0644 "$C/config.toml"
fi

mkdir -p "$U" "$K"
subst "$src/deploy/podvisord.service" > "$U/podvisord.service"
cp "$src/deploy/kubelet-podvisor.conf" "$K/50-podvisor.conf"
chmod 0644 "$U/podvisord.service" "$K/50-podvisor.conf"

echo "installed: $B/podvisor, $B/podvisord, $C/config.toml, $U/podvisord.service, $K/50-podvisor.conf"
if [ "$enable" = yes ]; then
	systemctl daemon-reload
	systemctl enable --now podvisord
	echo "podvisord started; restart kubelet to use the drop-in, then: kubectl apply -f $prefix/deploy/runtimeclass.yaml"
else
	echo "next: podvisor check --config $confdir/config.toml; systemctl daemon-reload && systemctl enable --now podvisord; restart kubelet"
fi
