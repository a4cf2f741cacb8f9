#!/usr/bin/env bash
# Build the Go client of `bench` (build/goclient/zsbench-client) from Debian's Go packages alone:
# GOPATH mode against /usr/share/gocode, no module proxy. Exits 3, saying what is missing, when the
# tools are not installed (bench then falls back to its Python client).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build/goclient"
missing=()
for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -d /usr/share/gocode/src/github.com/hashicorp/go-plugin ]] || missing+=(golang-github-hashicorp-go-plugin-dev)
[[ -d /usr/share/gocode/src/google.golang.org/grpc ]] || missing+=(golang-google-grpc-dev)
# grpc 1.33 decodes through github.com/golang/protobuf: v1.3 cannot read protoc-gen-go 1.28 messages, v1.5 can.
[[ -f /usr/share/gocode/src/github.com/golang/protobuf/proto/registry.go ]] || missing+=(golang-github-golang-protobuf-1-5-dev)
if ((${#missing[@]})); then
  echo "bench/goclient/build.sh: ${missing[*]} not installed; apt-get install golang-go golang-google-grpc-dev golang-github-hashicorp-go-plugin-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev protobuf-compiler protoc-gen-go protoc-gen-go-grpc" >&2
  exit 3
fi
src="$out/gopath/src/zsbench"
rm -rf "$src"
mkdir -p "$src/pluginv2" "$src/client"
protoc -I "$root/services/packaging/protos" \
  --go_out="$src/pluginv2" --go_opt=paths=source_relative --go_opt=Mpluginv2.proto=zsbench/pluginv2 \
  --go-grpc_out="$src/pluginv2" --go-grpc_opt=paths=source_relative --go-grpc_opt=Mpluginv2.proto=zsbench/pluginv2 \
  pluginv2.proto
cp "$root"/bench/goclient/*.go "$src/client/"
cd "$src/client"
env -u GOFLAGS GO111MODULE=off GOPATH="$out/gopath:/usr/share/gocode" GOPROXY=off GOCACHE="$out/cache" \
  go build -o "$out/zsbench-client" .
echo "$out/zsbench-client"
