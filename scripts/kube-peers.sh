#!/usr/bin/env bash
# Builds a real `kube-apiserver` (from the k8s.io/kubernetes Go module) and
# `etcd` (from go.etcd.io/etcd/server/v3) through the Go module proxy (no
# GitHub download, no container image) into a cache directory, for the
# integration tests of meshd on Kubernetes: the harness starts etcd and
# kube-apiserver on loopback and creates Pods, EndpointSlices and Nodes as
# plain objects (no kubelet, no controller-manager, no scheduler).
# Idempotent: binaries built by this script for the same versions are reused.
#
#   scripts/kube-peers.sh          # builds once; the last two lines are
#                                  #   etcd=PATH
#                                  #   kube-apiserver=PATH
#   scripts/kube-peers.sh --smoke  # also starts both on loopback, waits for
#                                  # /readyz, creates a Namespace, Service,
#                                  # Node, Pod (+ status) and EndpointSlice
#                                  # with curl, lists them back and stops
#                                  # both (every wait bounded; about 10 s)
#
# Environment:
#   KUBE_VERSION     k8s.io/kubernetes module version (default below); the
#                    k8s.io/* staging modules are pinned to the matching
#                    v0.MINOR.PATCH
#   ETCD_VERSION     go.etcd.io/etcd/server/v3 module version (default below)
#   MESH_PEER_CACHE  cache root (default ~/.cache/mesh-peers); the binaries go
#                    to $MESH_PEER_CACHE/kube/$KUBE_VERSION/kube-apiserver and
#                    $MESH_PEER_CACHE/kube/$KUBE_VERSION/etcd-$ETCD_VERSION
#
# Why the scratch module: k8s.io/kubernetes' go.mod replaces every k8s.io/*
# staging module (k8s.io/api, k8s.io/apiserver, ...) with ./staging/src/...,
# which the module zip does not hold, and requires them at v0.0.0. A main
# module that requires k8s.io/kubernetes and replaces each of them with its
# published v0.MINOR.PATCH builds `k8s.io/kubernetes/cmd/kube-apiserver`
# unchanged. etcd is a three-line main calling etcdmain.Main in a module of
# its own, so its versions do not move the apiserver's etcd client.
#
# Versions: k8s.io/kubernetes v1.37.2 is the newest release the Go module
# proxy serves here, and it builds with Go 1.26 (its go.mod says go 1.26.0);
# the staging modules it needs are served at v0.37.2. Its go.mod
# requires the etcd v3.7.0 client (and server/v3 v3.7.0 as a library), so
# etcd is v3.7.3, the newest patch of that minor release.
#
# Needs Go >= 1.26 and the Go module proxy; --smoke also needs curl, openssl
# and python3. Measured on the 2-core development machine:
#   cold build (GOMODCACHE and GOCACHE both empty, the standard library
#     rebuilt too): 5 min 04 s wall (etcd 40 s, kube-apiserver 264 s), 8 min
#     of CPU, 720 MB of modules downloaded, 2.9 GB of Go build cache, the
#     largest single build process peaking at 2.3 GB RSS. Cached: the
#     script answers at once.
#   sizes (stripped, static): kube-apiserver 119 MB, etcd 25 MB
#   start to ready: etcd /health 0.1-0.9 s; kube-apiserver /readyz 200 in
#     2.2-2.8 s (5 runs)
#   idle (5 s after the smoke objects): RSS kube-apiserver 270-280 MiB, etcd
#     37-39 MiB; CPU about 1% and 0.4% of one core
#   the whole --smoke: about 10 s (5 s of it the idle wait before the RSS
#     reading), 5 runs out of 5 passed
#
# Gotchas for a harness (each checked by --smoke or by hand at v1.37.2):
# EndpointSlice/Endpoints addresses may not be loopback (422), Pod IPs may;
# a Pod with spec.nodeName, once deleted, stays Terminating forever without
# a kubelet unless deleted with gracePeriodSeconds=0; a deleted Namespace
# stays Terminating forever (no namespace controller); the serving cert has
# no "localhost" SAN (use https://127.0.0.1:PORT); see the flags' comments
# in run_smoke and tests/interop/README.md ("Kubernetes peers").
set -euo pipefail

kube_version="${KUBE_VERSION:-v1.37.2}"
etcd_version="${ETCD_VERSION:-v3.7.3}"
cache="${MESH_PEER_CACHE:-$HOME/.cache/mesh-peers}"
dir="$cache/kube/$kube_version"
apiserver="$dir/kube-apiserver"
etcd="$dir/etcd-$etcd_version"

smoke=0
case "${1:-}" in
  "") ;;
  --smoke) smoke=1 ;;
  *) echo "usage: scripts/kube-peers.sh [--smoke]" >&2; exit 2 ;;
esac

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "scripts/kube-peers.sh: the go command is not installed; install Go >= 1.26" >&2
    exit 1
  fi
}

# Static binaries: neither needs C, and they do not care which libc the
# machine has. -trimpath and the VCS stamp off: the scratch module has no VCS.
# GOTOOLCHAIN=local: a module asking for a newer Go fails here, naming the
# version, instead of fetching a toolchain.
build_env=(CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=mod")

build_etcd() {
  need_go
  mkdir -p "$dir"
  local start tmp
  start=$(date +%s)
  echo "building go.etcd.io/etcd/server/v3@$etcd_version etcd into $dir (first time only)" >&2
  tmp="$(mktemp -d "$dir/.build-etcd.XXXXXX")"
  build_tmp="$tmp"
  cat >"$tmp/go.mod" <<EOF
module meshpeers/etcd

go 1.26

require go.etcd.io/etcd/server/v3 $etcd_version
EOF
  cat >"$tmp/main.go" <<'EOF'
// etcd's own main (go.etcd.io/etcd/server/v3/main.go upstream is the same call).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (cd "$tmp" && env "${build_env[@]}" go build -trimpath -ldflags='-s -w' -o "$tmp/etcd" .)
  mv "$tmp/etcd" "$etcd"
  rm -rf "$tmp"
  echo "built $etcd in $(( $(date +%s) - start ))s" >&2
}

build_apiserver() {
  need_go
  mkdir -p "$dir"
  local start tmp src minor_patch staging replaces m
  start=$(date +%s)
  echo "building k8s.io/kubernetes@$kube_version kube-apiserver into $dir (first time only)" >&2
  # The module's go.mod as the Go module proxy serves it (verified against
  # the checksum database like any `go get`): its replace block names every
  # staging module.
  local info
  info="$(GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$kube_version" 2>&1 || true)"
  src="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$info")"
  if [[ -z "$src" || ! -f "$src" ]]; then
    echo "scripts/kube-peers.sh: go mod download k8s.io/kubernetes@$kube_version gave no go.mod:" >&2
    echo "$info" >&2
    exit 1
  fi
  minor_patch="${kube_version#v1.}"
  staging="$(sed -n 's|^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*|\1|p' "$src")"
  if [[ -z "$staging" ]]; then
    echo "scripts/kube-peers.sh: no ./staging replace directives in k8s.io/kubernetes@$kube_version's go.mod" >&2
    exit 1
  fi
  replaces=""
  for m in $staging; do
    replaces+="	$m => $m v0.$minor_patch"$'\n'
  done
  tmp="$(mktemp -d "$dir/.build-kube.XXXXXX")"
  build_tmp="$tmp"
  cat >"$tmp/go.mod" <<EOF
module meshpeers/kube

go 1.26

require k8s.io/kubernetes $kube_version

replace (
$replaces)
EOF
  # The version kube-apiserver reports (/version, and what clients log) is
  # set by ldflags in kubernetes' own build (hack/lib/version.sh); without
  # them it says v0.0.0-master.
  local ld="-s -w" pkg major minor
  major="${kube_version#v}"; major="${major%%.*}"
  minor="${kube_version#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  (cd "$tmp" && env "${build_env[@]}" go build -trimpath -ldflags="$ld" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$tmp/kube-apiserver" "$apiserver"
  rm -rf "$tmp"
  echo "built $apiserver in $(( $(date +%s) - start ))s" >&2
}

# A failed or interrupted build leaves nothing behind (binaries are moved
# into place only when complete).
build_tmp=""
trap '[[ -z "$build_tmp" ]] || rm -rf "$build_tmp"' EXIT
[[ -x "$etcd" ]] || build_etcd
[[ -x "$apiserver" ]] || build_apiserver
trap - EXIT

# --smoke: etcd and kube-apiserver on loopback with the flags a test harness
# needs, every wait bounded; prints what it did to stderr and fails loudly.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

run_smoke() {
  local t0 t1 i c token p_client p_peer p_api
  # Globals, not locals: the EXIT trap runs after this function has returned.
  work="" etcd_pid="" api_pid="" code="" api=""
  for c in curl openssl python3; do
    command -v "$c" >/dev/null 2>&1 || { echo "scripts/kube-peers.sh --smoke: needs $c" >&2; exit 1; }
  done
  work="$(mktemp -d "${TMPDIR:-/tmp}/kube-peers-smoke.XXXXXX")"
  stop() {
    # SIGTERM, then SIGKILL after 15 s: the apiserver first (it drains its
    # watches and closes its etcd client), then etcd.
    local pid n
    for pid in "$api_pid" "$etcd_pid"; do
      [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || continue
      kill -TERM "$pid" 2>/dev/null || true
      for ((n = 0; n < 150; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "smoke: pid $pid ignored SIGTERM for 15s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
      wait "$pid" 2>/dev/null || true
    done
    api_pid="" etcd_pid=""
  }
  trap 'stop; rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM # so that the EXIT trap stops both on ^C or kill
  # Three free loopback ports (the kernel's choice; released just before use).
  read -r p_client p_peer p_api < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

  "$etcd" \
    --name=smoke \
    --data-dir="$work/etcd" \
    --listen-client-urls="http://127.0.0.1:$p_client" \
    --advertise-client-urls="http://127.0.0.1:$p_client" \
    --listen-peer-urls="http://127.0.0.1:$p_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$p_peer" \
    --initial-cluster="smoke=http://127.0.0.1:$p_peer" \
    --unsafe-no-fsync \
    --log-level=warn >"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  t0=$(date +%s.%N)
  for ((i = 0; ; i++)); do
    if curl -fsS --max-time 1 "http://127.0.0.1:$p_client/health" 2>/dev/null | grep -q '"health":"true"'; then break; fi
    if ! kill -0 "$etcd_pid" 2>/dev/null || ((i >= 150)); then
      echo "smoke: etcd not healthy within 15s; its log:" >&2; tail -30 "$work/etcd.log" >&2; exit 1
    fi
    sleep 0.1
  done
  t1=$(date +%s.%N)
  printf 'smoke: etcd healthy on 127.0.0.1:%s after %.2fs\n' "$p_client" "$(secs "$t0" "$t1")" >&2

  token="$(openssl rand -hex 24)"
  # token,user,uid,"groups": system:masters is allowed everything by the
  # apiserver itself, before RBAC is asked.
  echo "$token,smoke-admin,smoke-admin,\"system:masters\"" >"$work/tokens.csv"
  openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
  openssl rsa -in "$work/sa.key" -pubout -out "$work/sa.pub" 2>/dev/null
  mkdir -p "$work/certs"
  api_flags=(
    --etcd-servers="http://127.0.0.1:$p_client"
    --bind-address=127.0.0.1
    # Without it the apiserver advertises the default route's address (and
    # fails to start where there is none, as in a bare network namespace).
    --advertise-address=127.0.0.1
    --secure-port="$p_api"
    # Writes apiserver.crt (serving cert + its self-signed CA) and
    # apiserver.key; SANs: IP 127.0.0.1, the first service IP, kubernetes,
    # kubernetes.default, kubernetes.default.svc. No "localhost".
    --cert-dir="$work/certs"
    --token-auth-file="$work/tokens.csv"
    --authorization-mode=RBAC
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-account-key-file="$work/sa.pub"
    --service-account-signing-key-file="$work/sa.key"
    --service-cluster-ip-range=10.96.0.0/16
    # Needed with a loopback advertise address: the default (lease)
    # reconciler writes it into the "kubernetes" Endpoints, whose validation
    # refuses loopback, and the apiserver exits at start.
    --endpoint-reconciler-type=none
    # No controller-manager creates the "default" ServiceAccount of a new
    # namespace, and with this plugin on every Pod create is 403 (error
    # looking up service account NS/default).
    --disable-admission-plugins=ServiceAccount
  )
  { printf 'smoke: kube-apiserver'; printf ' %s' "${api_flags[@]}"; printf '\n'; } >&2
  "$apiserver" "${api_flags[@]}" >"$work/apiserver.log" 2>&1 &
  api_pid=$!
  t0=$(date +%s.%N)
  api="https://127.0.0.1:$p_api"
  kc() { # METHOD PATH [JSON]: curl as the admin user, verifying the self-signed
         # serving cert; prints the body, fails on HTTP >= 400
    local out
    local data=()
    [[ $# -lt 3 ]] || data=(--data "$3")
    out="$(curl -sS --cacert "$work/certs/apiserver.crt" --max-time 10 -H "Authorization: Bearer $token" -H "Content-Type: ${ctype:-application/json}" \
      -X "$1" "$api$2" "${data[@]}" -w '\n%{http_code}')" || return 1
    code="${out##*$'\n'}"
    out="${out%$'\n'*}"
    if ((code >= 400)); then echo "smoke: $1 $2 -> HTTP $code: $out" >&2; return 1; fi
    printf '%s' "$out"
  }
  for ((i = 0; ; i++)); do
    code="$(curl -sk --max-time 2 -o "$work/readyz" -w '%{http_code}' -H "Authorization: Bearer $token" "$api/readyz" 2>/dev/null || true)"
    [[ "$code" == 200 ]] && break
    if ! kill -0 "$api_pid" 2>/dev/null || ((i >= 240)); then
      echo "smoke: kube-apiserver not ready within 60s (last /readyz: HTTP $code); its log:" >&2
      tail -40 "$work/apiserver.log" >&2; exit 1
    fi
    sleep 0.25
  done
  t1=$(date +%s.%N)
  printf 'smoke: kube-apiserver /readyz 200 on 127.0.0.1:%s after %.2fs (%s)\n' "$p_api" "$(secs "$t0" "$t1")" \
    "$(kc GET /version | python3 -c 'import json,sys; print(json.load(sys.stdin)["gitVersion"])')" >&2

  # What the meshd tests will do: objects only, no kubelet or controllers.
  kc POST /api/v1/namespaces '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"smoke"}}' >/dev/null
  kc POST /api/v1/namespaces/smoke/services '{"apiVersion":"v1","kind":"Service","metadata":{"name":"reviews","labels":{"app":"reviews"}},"spec":{"selector":{"app":"reviews"},"ports":[{"name":"http","port":9080,"targetPort":9080}]}}' >/dev/null
  kc POST /api/v1/nodes '{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a","labels":{"topology.kubernetes.io/zone":"zone-a"}}}' >/dev/null
  kc POST /api/v1/namespaces/smoke/pods '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"reviews-1","labels":{"app":"reviews"}},"spec":{"nodeName":"node-a","containers":[{"name":"app","image":"none"}]}}' >/dev/null
  # No kubelet: the test plays it, writing the pod's IP and readiness to
  # the status subresource (a JSON merge patch).
  ctype=application/merge-patch+json kc PATCH /api/v1/namespaces/smoke/pods/reviews-1/status \
    '{"status":{"phase":"Running","podIP":"127.0.0.11","podIPs":[{"ip":"127.0.0.11"}],"conditions":[{"type":"Ready","status":"True"}]}}' >/dev/null
  # EndpointSlice (and Endpoints) addresses may NOT be loopback (nor
  # unspecified or link-local): validation answers 422 for 127.0.0.0/8, while
  # a Pod's status.podIP may be 127.0.0.x. The slice below uses TEST-NET-2
  # (198.51.100.0/24, documentation only: nothing is ever sent to it).
  slice='{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"reviews-abc","labels":{"kubernetes.io/service-name":"reviews"}},"addressType":"IPv4","ports":[{"name":"http","port":9080,"protocol":"TCP"}],"endpoints":[{"addresses":["ADDR"],"conditions":{"ready":true},"nodeName":"node-a","zone":"zone-a","targetRef":{"kind":"Pod","namespace":"smoke","name":"reviews-1"}}]}'
  if kc POST /apis/discovery.k8s.io/v1/namespaces/smoke/endpointslices "${slice/ADDR/127.0.0.11}" >/dev/null 2>&1 || [[ "$code" != 422 ]]; then
    echo "smoke: an EndpointSlice with a loopback address was not refused with 422 (HTTP $code)" >&2; exit 1
  fi
  echo "smoke: an EndpointSlice address 127.0.0.11 is refused (HTTP 422, loopback range), as expected" >&2
  kc POST /apis/discovery.k8s.io/v1/namespaces/smoke/endpointslices "${slice/ADDR/198.51.100.11}" >/dev/null

  echo "smoke: listed back:" >&2
  kc GET /api/v1/namespaces | python3 -c 'import json,sys; print("  namespaces:", " ".join(i["metadata"]["name"] for i in json.load(sys.stdin)["items"]))' >&2
  kc GET /api/v1/namespaces/smoke/services | python3 -c 'import json,sys
for i in json.load(sys.stdin)["items"]: print("  service %s/%s clusterIP=%s ports=%s" % (i["metadata"]["namespace"], i["metadata"]["name"], i["spec"]["clusterIP"], [p["port"] for p in i["spec"]["ports"]]))' >&2
  kc GET /api/v1/nodes | python3 -c 'import json,sys; print("  nodes:", " ".join(i["metadata"]["name"] for i in json.load(sys.stdin)["items"]))' >&2
  kc GET /api/v1/namespaces/smoke/pods | python3 -c 'import json,sys
for i in json.load(sys.stdin)["items"]: print("  pod %s/%s node=%s phase=%s podIP=%s" % (i["metadata"]["namespace"], i["metadata"]["name"], i["spec"].get("nodeName"), i["status"].get("phase"), i["status"].get("podIP")))' >&2
  kc GET '/apis/discovery.k8s.io/v1/namespaces/smoke/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dreviews' | python3 -c 'import json,sys
for i in json.load(sys.stdin)["items"]: print("  endpointslice %s/%s addresses=%s" % (i["metadata"]["namespace"], i["metadata"]["name"], [a for e in i["endpoints"] for a in e["addresses"]]))' >&2

  sleep 5
  printf 'smoke: idle RSS: etcd %s MiB, kube-apiserver %s MiB\n' \
    "$(( $(awk '/^VmRSS/ {print $2}' "/proc/$etcd_pid/status") / 1024 ))" \
    "$(( $(awk '/^VmRSS/ {print $2}' "/proc/$api_pid/status") / 1024 ))" >&2
  t0=$(date +%s.%N)
  stop
  t1=$(date +%s.%N)
  printf 'smoke: both stopped after %.2fs; OK\n' "$(secs "$t0" "$t1")" >&2
}

if [[ "$smoke" == 1 ]]; then
  run_smoke
fi

echo "etcd=$etcd"
echo "kube-apiserver=$apiserver"
