# Shared by the GPU benchmark scripts (sourced, not run): one step of a time-budgeted run.
# The sourcing script sets $out (report folder), $budget (seconds for the whole run) and $start ($SECONDS
# when it began).
step() {  # step NAME MAX_SECONDS COMMAND...: run with what is left of the budget, output to $out/NAME.md
    local name=$1 max=$2; shift 2
    local left=$((budget - (SECONDS - start)))
    if [ "$left" -lt 30 ]; then echo "== $name: skipped (budget spent)" | tee "$out/$name.md"; return; fi
    [ "$max" -gt "$left" ] && max=$left
    echo "== $name (at most ${max}s)"
    timeout -k 10 "$max" "$@" 2>&1 | tee "$out/$name.md"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || echo "== $name: exit $rc ($([ "$rc" -eq 124 ] && echo 'stopped at its time limit' || echo failed))" | tee -a "$out/$name.md"
}
