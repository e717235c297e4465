# Sourced by scripts/asv_aa.sh and scripts/drift_aa.sh: plant_slowdown FILE CLASS FACTOR NOTE appends to a
# module of a scratch tree (never merged) a wrapper that makes CLASS's forward and forward_backward take
# FACTOR times as long (each call sleeps factor - 1 times its own duration), with the same spread.
plant_slowdown() {
    cat >> "$1" <<PLANTED

# planted ($4, never merged): $2's calls $3 times as long
def _planted(method, factor=$3):
    import time as _time

    def call(*args, **kwargs):
        t0 = _time.perf_counter()
        out = method(*args, **kwargs)
        _time.sleep((factor - 1.0) * (_time.perf_counter() - t0))
        return out
    return call


$2.forward = _planted($2.forward)
$2.forward_backward = _planted($2.forward_backward)
PLANTED
}
