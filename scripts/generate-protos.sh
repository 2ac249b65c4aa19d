#!/usr/bin/env bash
# Regenerates Sources/BankLinkProto from proto/ with protoc and the Swift plugins built from the
# mirrored swift-protobuf and grpc-swift-protobuf packages.
#
#   scripts/generate-protos.sh           rewrite the committed generated code
#   scripts/generate-protos.sh --check   fail if the committed code differs from what proto/ gives
set -euo pipefail

cd "$(dirname "$0")/.."
out_dir="Sources/BankLinkProto"
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 64 ;;
esac

if ! command -v protoc >/dev/null 2>&1; then
  echo "error: protoc not found; install Debian's protobuf-compiler (make deps)" >&2
  exit 1
fi

# The plugins are products of our own dependencies, so they build with the pinned versions.
swift build --product protoc-gen-swift >/dev/null
swift build --product protoc-gen-grpc-swift-2 >/dev/null
bin_dir="$(swift build --show-bin-path)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mapfile -t protos < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)

protoc \
  --proto_path=proto \
  --plugin=protoc-gen-swift="$bin_dir/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin_dir/protoc-gen-grpc-swift-2" \
  --swift_out="$work" \
  --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  --grpc-swift-2_out="$work" \
  --grpc-swift-2_opt=Visibility=Public,Server=true,Client=true,FileNaming=PathToUnderscores \
  "${protos[@]}"

if $check; then
  if ! diff -r -x README.md "$work" "$out_dir" >"$work.diff" 2>&1; then
    echo "error: $out_dir is stale: it differs from what proto/ generates." >&2
    echo "Run scripts/generate-protos.sh and commit the result." >&2
    head -n 40 "$work.diff" >&2
    rm -f "$work.diff"
    exit 1
  fi
  rm -f "$work.diff"
  echo "generated code is up to date ($(ls "$work" | wc -l) files)"
else
  find "$out_dir" -name '*.swift' -delete
  cp "$work"/*.swift "$out_dir"/
  echo "generated $(ls "$work" | wc -l) files into $out_dir"
fi
