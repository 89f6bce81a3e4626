#!/usr/bin/env bash
# Golden-file test of cocostorage-policy: run_golden.sh BINARY CASE_DIR
#   CASE_DIR/args            options (one line; @CASE@ is replaced by CASE_DIR)
#   CASE_DIR/input*.yaml     the Kubernetes objects
#   CASE_DIR/expected/       exit_code (default 0), stderr_contains (a fixed
#                            string), and any output file (cocostorage.toml,
#                            initdata.toml, initdata.digest,
#                            cc_init_data.annotation, cocostorage.rego)
#                            compared byte for byte
# Every case also runs twice and must give identical bytes, and a merge case
# (CASE_DIR/existing-initdata.toml) must keep the existing bytes as a prefix.
# COCOSTORAGE_UPDATE_GOLDENS=1 rewrites expected/ from this run (review the diff).
set -euo pipefail
bin=$1
case_dir=$2
expected=$case_dir/expected
work=$(mktemp -d /tmp/policygen.XXXXXX)
trap 'rm -rf "$work"' EXIT

read -r -a args < <(sed "s#@CASE@#$case_dir#g" "$case_dir/args")
inputs=("$case_dir"/input*.yaml)

run() {  # run OUTDIR: sets rc, leaves stderr in OUTDIR.stderr
  rc=0
  "$bin" "${args[@]}" --out "$1" "${inputs[@]}" >"$1.stdout" 2>"$1.stderr" || rc=$?
}
run "$work/a"
rc_a=$rc
run "$work/b"

want_rc=0
[[ -f $expected/exit_code ]] && want_rc=$(<"$expected/exit_code")
fail=0
if [[ ${COCOSTORAGE_UPDATE_GOLDENS:-} == 1 ]]; then
  mkdir -p "$expected"
  if ((rc_a != 0)); then echo "$rc_a" >"$expected/exit_code"; else rm -f "$expected/exit_code"; fi
  [[ -d $work/a ]] && cp "$work"/a/* "$expected/" 2>/dev/null || true
  echo "updated $expected"
fi
if [[ $rc_a != "$want_rc" ]]; then
  echo "exit code $rc_a, want $want_rc; stderr:"
  cat "$work/a.stderr"
  fail=1
fi
if [[ -f $expected/stderr_contains ]] && ! grep -qF -- "$(<"$expected/stderr_contains")" "$work/a.stderr"; then
  echo "stderr lacks \"$(<"$expected/stderr_contains")\":"
  cat "$work/a.stderr"
  fail=1
fi
for f in "$expected"/*; do
  name=$(basename "$f")
  [[ $name == exit_code || $name == stderr_contains ]] && continue
  if ! cmp -s "$f" "$work/a/$name"; then
    echo "$name differs from the golden file (COCOSTORAGE_UPDATE_GOLDENS=1 regenerates):"
    diff -u "$f" "$work/a/$name" || true
    fail=1
  fi
done
if [[ -d $work/a ]]; then
  for f in "$work"/a/*; do
    if ! cmp -s "$f" "$work/b/$(basename "$f")"; then
      echo "$(basename "$f") differs between two runs: not deterministic"
      fail=1
    fi
  done
fi
if ((rc_a == 0)) && [[ -f $case_dir/existing-initdata.toml ]]; then
  size=$(stat -c %s "$case_dir/existing-initdata.toml")
  if ! cmp -s -n "$size" "$case_dir/existing-initdata.toml" "$work/a/initdata.toml"; then
    echo "initdata.toml does not keep the existing init-data's bytes"
    fail=1
  fi
fi
exit $fail
