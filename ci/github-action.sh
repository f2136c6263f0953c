#!/usr/bin/env bash
# The run step of the composite GitHub Action (action.yml): `mqtt-keepalive check` on the captures,
# a JSON report, the job summary and annotations, and the step outputs `findings`, `report` and
# `exit-code`. It exits with check's exit code, so the step fails as the gate says.
#
# Inputs arrive only through the environment (never pasted into this script):
#   INPUT_CAPTURES   files, directories or globs, separated by spaces or newlines (required)
#   MQTT_KEEPALIVE_RULES / _PROFILE / _FAIL_ON / _JUNIT   read by mqtt-keepalive itself; empty = unset
#   ACTION_PYTHON    the interpreter that has mqtt-keepalive installed (default: python3)
#   RUNNER_TEMP, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY   set by the runner
set -euo pipefail

python="${ACTION_PYTHON:-python3}"
report="${ACTION_REPORT:-${RUNNER_TEMP:-/tmp}/mqtt-keepalive-report.json}"

set -f                    # globs are expanded by mqtt-keepalive itself (with ** support)
read -r -d '' -a captures <<<"${INPUT_CAPTURES:-}" || true
set +f
if [ "${#captures[@]}" -eq 0 ]; then
  echo "::error title=mqtt-keepalive::the captures input is empty"
  exit 2
fi

code=0
"$python" -m analyzer check --format json --output "$report" -- "${captures[@]}" || code=$?

findings=0
if [ -s "$report" ]; then
  findings=$("$python" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["findings"]))' "$report")
fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  {
    echo "findings=$findings"
    echo "report=$report"
    echo "exit-code=$code"
  } >>"$GITHUB_OUTPUT"
fi
exit "$code"
