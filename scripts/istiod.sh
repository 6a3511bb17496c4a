#!/usr/bin/env bash
# Builds istiod's `pilot-discovery` from the istio.io/istio Go module (through
# the Go module proxy: no Kubernetes, no container image, no download site)
# into a cache directory, for the differential test against meshd
# (tests/tests/istiod_diff.rs). Idempotent: a binary built by this script
# with the same patch is reused.
#
#   scripts/istiod.sh            # prints the binary's path as the last line
#
# Environment:
#   ISTIOD_VERSION   istio.io/istio module version. Default below: the one the
#                    Go module proxy serves here (istio publishes no tagged Go
#                    module versions, only pseudo-versions of master).
#   MESH_PEER_CACHE  cache root (default ~/.cache/mesh-peers); the binary goes
#                    to $MESH_PEER_CACHE/istiod/$ISTIOD_VERSION/pilot-discovery
#
# One patch is applied, and only so istiod can run without Kubernetes at all
# (`discovery --registries= --configDir=DIR`): at this version the
# ServiceEntry registry reads Namespace objects from the multicluster
# controller, which only exists with a Kubernetes client, so a kube-less
# istiod dies at start with a nil-pointer panic
# (pilot/pkg/serviceregistry/serviceentry/controller.go, newController). The
# patch gives it an empty Namespace collection instead, which is what "no
# Kubernetes" means; nothing that builds xDS is touched. The served versions
# v0.0.0-20260423205519-b01690e6db7d and v0.0.0-20260826214018-9739e10eb9d7
# have the same line.
#
# Needs Go >= 1.26 (istio's go.mod says `go 1.26.0`), git or patch, and the Go
# module proxy. A cold build (empty module and build caches) took 6-7 minutes
# on the 2-core development machine; see tests/interop/README.md
# ("Differential check against istiod").
set -euo pipefail

version="${ISTIOD_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
cache="${MESH_PEER_CACHE:-$HOME/.cache/mesh-peers}"
dir="$cache/istiod/$version"
bin="$dir/pilot-discovery"
# Bump when the patch below changes, so an old build is not reused.
patch_id="kubeless-namespaces-1"

if [[ -x "$bin" && "$(cat "$dir/PATCH" 2>/dev/null)" == "$patch_id" ]]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "scripts/istiod.sh: the go command is not installed; install Go >= 1.26" >&2
  exit 1
fi

mkdir -p "$dir"
start=$(date +%s)
echo "building istio.io/istio@$version pilot-discovery into $dir (first time only)" >&2

# The module's source as the Go module proxy serves it (verified against the
# checksum database like any `go get`).
src="$(go mod download -json "istio.io/istio@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ -z "$src" || ! -f "$src/go.mod" ]]; then
  echo "scripts/istiod.sh: go mod download istio.io/istio@$version gave no source directory" >&2
  exit 1
fi

tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
cp -R "$src/." "$tmp/istio"
chmod -R u+w "$tmp/istio"

cat >"$tmp/kubeless.patch" <<'PATCH'
--- a/pilot/pkg/serviceregistry/serviceentry/controller.go
+++ b/pilot/pkg/serviceregistry/serviceentry/controller.go
@@ -221,7 +221,12 @@
 	}
 
 	if !workloadEntryController {
-		s.inputs.Namespaces = multiclusterController.ConfigCluster().Namespaces()
+		if multiclusterController != nil {
+			s.inputs.Namespaces = multiclusterController.ConfigCluster().Namespaces()
+		} else {
+			// No Kubernetes (--registries= --configDir=DIR): no Namespace objects.
+			s.inputs.Namespaces = krt.NewStaticCollection[*v1.Namespace](nil, nil, s.opts.WithName("inputs/Namespaces")...)
+		}
 		s.inputs.ServiceEntries = store.KrtCollection(gvk.ServiceEntry)
 		s.inputs.ExternalWorkloads = krt.NewStaticCollection[*model.WorkloadInstance](nil, nil, s.opts.WithName("inputs/ExternalWorkloads")...)
 		s.inputs.ExternalWorkloadsByIP = krt.NewIndex(s.inputs.ExternalWorkloads, "ip", func(wi *model.WorkloadInstance) []string {
PATCH
if ! (cd "$tmp/istio" && patch -p1 --forward --quiet <"$tmp/kubeless.patch"); then
  echo "scripts/istiod.sh: the kube-less patch does not apply to istio.io/istio@$version; update it in this script" >&2
  exit 1
fi

# istio's own go.mod and go.sum pin every dependency (it has no replace
# directives). CGO is off: istiod needs no C, and a static binary does not
# care which libc the machine has.
(cd "$tmp/istio" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=readonly" \
  go build -trimpath -ldflags='-s -w' -o "$tmp/pilot-discovery" ./pilot/cmd/pilot-discovery)
mv "$tmp/pilot-discovery" "$bin"
echo "$patch_id" >"$dir/PATCH"
echo "built $bin in $(( $(date +%s) - start ))s" >&2
echo "$bin"
