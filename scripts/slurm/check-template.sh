#!/usr/bin/env bash
# check-template.sh: scripts/slurm/sweeper.sbatch end to end under a real SLURM, by hand (a
# test machine with `sbatch`, e.g. a one-node SLURM made by a local setup script; jobs take
# 2-11 minutes each on a small machine). The template is submitted with SPACE=smoke (4 trials),
# its #SBATCH lines edited as a user would for this machine (1 node, no GPUs, all CPUs,
# 30 min, log in WORK). Scenarios, all by default or those named:
#
#   cancel    scancel once 2 trials are ok: the log ends with the run's "interrupted (SIGTERM)"
#             line and exit 143, no lease is left; the resubmission runs only the 2 unfinished
#             trials and ends COMPLETED 0:0 with 4 ok rows, no process of either job left
#   requeue   `scontrol requeue` (a preemption) once its trials started: the job runs again,
#             its log keeps the lines from before the requeue (then it is cancelled)
#   headfail  the Ray head cannot start (its port is taken): the job ends FAILED within 5 min
#
#   bash scripts/slurm/check-template.sh [cancel] [requeue] [headfail]
# Env: VENV (REPO/.venv), WORK (a new /tmp/sweeper-slurm.*), PORT (Ray's port block, 6700),
# CHECK_TIMEOUT (s per job, 1800). Ray runs with RAY_AUTH_MODE=disabled, RAY_TMPDIR=WORK/ray.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
WORK=${WORK:-$(mktemp -d /tmp/sweeper-slurm.XXXXXX)}
TIMEOUT=${CHECK_TIMEOUT:-1800}
PORT=${PORT:-6700}
scenarios=("$@"); ((${#scenarios[@]})) || scenarios=(cancel requeue headfail)
say() { printf '%s check: %s\n' "$(date -u +%T)" "$*"; }
fail() { printf '%s check: FAIL: %s\n' "$(date -u +%T)" "$*" >&2; exit 1; }
command -v sbatch >/dev/null || fail "no sbatch on PATH: start a SLURM first"
mkdir -p "$WORK/data"
sed -e 's/^#SBATCH --nodes=.*/#SBATCH --nodes=1/' -e '/^#SBATCH --gpus-per-node/d' \
    -e "s/^#SBATCH --cpus-per-task=.*/#SBATCH --cpus-per-task=$(nproc)/" \
    -e 's/^#SBATCH --time=.*/#SBATCH --time=00:30:00/' \
    -e "s|^#SBATCH --output=.*|#SBATCH --output=$WORK/sweeper-%j.log|" \
    "$REPO/scripts/slurm/sweeper.sbatch" > "$WORK/sweeper.sbatch"

submit() {  # submit RESULTS [PORT]: prints the job id
    (cd "$WORK" && SPACE=smoke RESULTS="$1" DATA="$WORK/data" VENV="$VENV" PORT="${2:-$PORT}" \
        RAY_AUTH_MODE=disabled RAY_TMPDIR="$WORK/ray" sbatch --parsable "$WORK/sweeper.sbatch")
}
field() { grep -o " $1=[^ ]*" <<<"$2" | cut -d= -f2; }
log_of() { echo "$WORK/sweeper-$1.log"; }
# wait_job JOB [OK_LINES [RESTARTS]]: until the job ended, or its log has that many "ok" lines
# after that many restarts; prints "STATE EXITCODE SECONDS"
wait_job() {
    local job=$1 rows=${2:-} restarts=${3:-0} n line state t0=$SECONDS
    while :; do
        line=$(scontrol show job -o "$job") || fail "job $job vanished"
        state=$(field JobState "$line")
        case $state in
            PENDING|RUNNING|CONFIGURING|COMPLETING|REQUEUED|RESIZING|SUSPENDED) ;;
            *) echo "$state $(field ExitCode "$line") $((SECONDS - t0))"; return;;
        esac
        if [[ -n $rows && $state == RUNNING && $(field Restarts "$line") -ge $restarts ]]; then
            n=$(sed -n "/(restart $restarts)/,\$p" "$(log_of "$job")" 2>/dev/null |
                grep -c '^[0-9-]* [0-9:]* ok ') || n=0
            if ((n >= rows)); then echo "$state - $((SECONDS - t0))"; return; fi
        fi
        ((SECONDS - t0 < TIMEOUT)) || { scancel "$job"; fail "job $job still $state"; }
        sleep 3
    done
}
ok_rows() {  # through sweeper's own reader (rows may be one file each or compacted)
    "$VENV/bin/python" -c "import sys; from sweeper import results
d = results.read(sys.argv[1]); print(int((d['status'] == 'ok').sum()) if len(d) else 0)" "$1"
}
lease_left() {
    "$VENV/bin/python" -c "import sys; from sweeper import results
print(results.Lease(sys.argv[1]).current()[1] is not None)" "$1"
}
leftovers() {  # processes whose environment names the job
    local p
    for p in /proc/[0-9]*; do
        { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxE "SLURM_JOB_?ID=$1" &&
            ps -o pid=,args= -p "${p#/proc/}" | cut -c1-120
    done
    true
}
expect_done() {  # expect_done JOB STATE CODE RESULTS
    local job=$1 state=$2 code=$3 left
    [[ $state == COMPLETED && $code == 0:0 ]] || fail "job $job ended $state $code"
    [[ $(ok_rows "$4/smoke") == 4 ]] || fail "$(ok_rows "$4/smoke") ok rows in $4/smoke, not 4"
    sleep 2; left=$(leftovers "$job"); [[ -z $left ]] || fail "job $job left processes: $left"
}
noise() { grep -cE 'CANCELLED AT|task [0-9]+: Killed|SIGTERM received|PC: @' "$(log_of "$1")" || true; }

check_cancel() {
    local r=$WORK/cancel job state code s left
    job=$(submit "$r"); say "cancel: job $job submitted; scancel once 2 trials are ok"
    read -r state _ s < <(wait_job "$job" 2)
    [[ $state == RUNNING ]] || fail "job $job ended ($state) before 2 trials were ok"
    sleep 20   # the next trials get an epoch checkpoint or more
    scancel "$job"
    read -r state code s < <(wait_job "$job")
    say "cancel: job $job $state $code ${s}s after scancel; log tail:"
    tail -n 4 "$(log_of "$job")" | sed 's/^/    /'
    grep -q '^interrupted (SIGTERM): [0-9]* trial(s) left unfinished' "$(log_of "$job")" ||
        fail "no interrupted line in $(log_of "$job")"
    grep -q 'sweeper run exited with 143$' "$(log_of "$job")" || fail "the run did not exit 143"
    [[ $(lease_left "$r/smoke") == False ]] || fail "a lease was left in $r/smoke/_lease"
    left=$(leftovers "$job"); [[ -z $left ]] || fail "job $job left processes: $left"
    job=$(submit "$r"); say "cancel: resubmitted as job $job"
    read -r state code s < <(wait_job "$job")
    say "cancel: job $job $state $code in ${s}s"
    grep -q 'smoke: 2 trial(s) to run' "$(log_of "$job")" ||
        fail "the resubmission did not run just the 2 unfinished trials"
    expect_done "$job" "$state" "$code" "$r"
    say "cancel: PASS (noise lines in the resubmitted job's log: $(noise "$job"))"
}

check_requeue() {
    local r=$WORK/requeue job state code s log
    job=$(submit "$r"); log=$(log_of "$job")
    say "requeue: job $job submitted; requeue once its trials started"
    until grep -q '^[0-9-]* [0-9:]* start ' "$log" 2>/dev/null; do
        [[ $(field JobState "$(scontrol show job -o "$job")") =~ ^(PENDING|RUNNING)$ ]] ||
            fail "job $job ended before its trials started"
        sleep 3
    done
    scontrol requeue "$job"
    say "requeue: job $job requeued; waiting for it to run again"
    until [[ $(field Restarts "$(scontrol show job -o "$job")") -ge 1 ]] &&
          sed -n '/(restart 1)/,$p' "$log" | grep -q 'smoke: [0-9]* trial(s) to run'; do
        sleep 3
    done
    grep -q "job $job (restart 0)" "$log" || fail "the log lost the lines of the first run"
    grep -q "^[0-9-]* [0-9:]* start " <(sed -n '1,/(restart 1)/p' "$log") ||
        fail "the log lost the first run's trial lines"
    say "requeue: PASS (the log keeps the first run's lines and goes on with the second's):"
    grep -E '\(restart [01]\)|trial\(s\) to run|interrupted|exited with' "$log" | sed 's/^/    /'
    scancel "$job"; read -r state code s < <(wait_job "$job")
    say "requeue: job $job $state $code after the scancel that ends the scenario"
}

check_headfail() {
    local job state code s t0 taken
    # a listener on the head's port: `ray start --head` cannot bind it
    "$VENV/bin/python" -c "import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', $PORT + 1000)); s.listen(); time.sleep(900)" &
    taken=$!
    t0=$SECONDS
    job=$(submit "$WORK/headfail" $((PORT + 1000))); say "headfail: job $job submitted"
    read -r state code s < <(wait_job "$job")
    kill "$taken"; wait "$taken" 2>/dev/null || true
    say "headfail: job $job $state $code $((SECONDS - t0))s after submission; log tail:"
    tail -n 3 "$(log_of "$job")" | sed 's/^/    /'
    [[ $state == FAILED ]] || fail "job $job ended $state, not FAILED"
    grep -q "^sweeper.sbatch: the Ray head on .*: a Ray node's srun step ended" "$(log_of "$job")" ||
        grep -q "^sweeper.sbatch: the Ray head on .*: not ready after" "$(log_of "$job")" ||
        fail "the log does not say that the Ray head did not start"
    ((SECONDS - t0 <= 300)) || fail "job $job took $((SECONDS - t0))s to fail"
    say "headfail: PASS"
}

for s in "${scenarios[@]}"; do "check_$s"; done
say "all PASS (work in $WORK)"
