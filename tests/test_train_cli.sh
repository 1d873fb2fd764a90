#!/bin/sh
# test_train_cli.sh - `loco train` end to end on a tiny config: a faces run
# writes an openable folder, --resume continues it, a PNG folder trains, and
# bad arguments fail with exit 1 or 2 and a 'loco: ...' message.
# POSIX sh; run from the repository root. Uses $LOCO, else $BUILD/loco, else
# build/loco.
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_setup test_train_cli.sh
# a failure here always shows the command's stderr
bad() {
    nfail=$((nfail + 1)); echo "  FAIL $1"
    if [ -s "$T/stderr" ]; then sed 's/^/       stderr: /' "$T/stderr" | sed -n '1,12p'; fi
}

cat > "$T/cfg.json" <<'JSON'
{"_class_name": "UNet2DModel", "sample_size": 32, "in_channels": 3, "out_channels": 3,
 "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8, "attention_head_dim": 8,
 "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}
JSON

if "$LOCO" train --config "$T/cfg.json" --data faces --out "$T/m" --steps 4 --batch 4 --seed 3 --sample-count 0 2>"$T/stderr" &&
    grep -q 'step 4/4' "$T/stderr" && [ -f "$T/m/diffusion_pytorch_model.safetensors" ] &&
    [ -f "$T/m/train_state.safetensors" ] && [ -f "$T/m/scheduler/scheduler_config.json" ] &&
    "$LOCO" info "$T/m" >/dev/null 2>>"$T/stderr"; then ok "train faces: folder written, progress printed, opens"
else bad "train faces"; fi

if "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/m" --steps 6 --batch 4 --seed 3 --resume \
    --sample-count 0 2>"$T/stderr" && [ ! -s "$T/stderr" ]; then ok "train --resume (quiet: nothing on stderr)"
else bad "train --resume"; fi

# samples: a grid at the end; --sample-every trains in chunks (resuming) and
# must give the same weights as one run
W=diffusion_pytorch_model.safetensors
if "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/s1" --steps 4 --batch 2 --seed 5 \
    --sample-count 4 --sample-steps 3 2>"$T/stderr" && [ -s "$T/s1/samples.png" ] &&
    [ "$(od -An -tu1 -j16 -N8 "$T/s1/samples.png" | tr -s ' ')" = " 0 0 0 64 0 0 0 64" ]; then
    ok "train writes samples.png (4 samples: a 64x64 grid)"
else bad "train writes samples.png"; fi
if "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/s2" --steps 4 --batch 2 --seed 5 \
    --sample-count 4 --sample-steps 3 --sample-every 2 2>"$T/stderr" && cmp -s "$T/s1/$W" "$T/s2/$W" &&
    cmp -s "$T/s1/samples.png" "$T/s2/samples.png"; then
    ok "--sample-every 2: same weights and samples as one run"
else bad "--sample-every 2"; fi

"$LOCO" --quiet dataset faces --count 6 --out "$T/png" 2>"$T/stderr"
if "$LOCO" --quiet train --config "$T/cfg.json" --data "$T/png" --out "$T/m2" --steps 2 --batch 2 --sample-count 0 \
    2>"$T/stderr"; then
    ok "train on a PNG folder"
else bad "train on a PNG folder"; fi
# the built-in faces are the PNGs of `loco dataset faces`, version for version
"$LOCO" --quiet dataset faces --version 1 --count 6 --out "$T/png1" 2>"$T/stderr"
for d in faces:f2 faces-v1:f1 "$T/png":p2 "$T/png1":p1; do
    "$LOCO" --quiet train --config "$T/cfg.json" --data "${d%:*}" --data-count 6 --out "$T/${d##*:}" --steps 2 \
        --batch 2 --seed 4 --sample-count 0 2>"$T/stderr" || bad "train --data ${d%:*}"
done
if cmp -s "$T/f2/$W" "$T/p2/$W" && cmp -s "$T/f1/$W" "$T/p1/$W" && ! cmp -s "$T/f1/$W" "$T/f2/$W"; then
    ok "--data faces and faces-v1: the weights of their PNG folders (versions 2 and 1), and not each other's"
else bad "--data faces / faces-v1 against their PNG folders"; fi

# --beta-end: written to the scheduler config; a resume cannot change it
if "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/b" --steps 2 --batch 2 --beta-end 0.01 \
    --sample-count 0 2>"$T/stderr" && grep -q '"beta_end": 0.01,' "$T/b/scheduler/scheduler_config.json" &&
    grep -q '"beta_start": 0.0001,' "$T/b/scheduler/scheduler_config.json"; then
    ok "train --beta-end 0.01: scheduler_config.json says so"
else bad "train --beta-end 0.01"; fi
if ! "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/b" --steps 3 --batch 2 --resume \
    --sample-count 0 2>"$T/stderr" && grep -q 'train_state.safetensors.*beta_end 0.01' "$T/stderr"; then
    ok "resume with another beta_end is refused, naming the state file and the key"
else bad "resume with another beta_end"; fi

# the default run's scheduler config is the one from before prediction types
if grep -q '"prediction_type": "epsilon",' "$T/b/scheduler/scheduler_config.json" &&
    ! grep -q 'rescale_betas_zero_snr\|timestep_spacing' "$T/b/scheduler/scheduler_config.json"; then
    ok "default run: epsilon, no zero-SNR keys in scheduler_config.json"
else bad "default run's scheduler_config.json"; fi

# --prediction v --zero-snr: written to the scheduler config (diffusers
# reads the folder as the same model), the folder opens as a v model with
# abar[T-1] = 0, samples from pure noise (a NaN would fail the network's
# finite check), and a resume cannot change either flag
S="$T/v/scheduler/scheduler_config.json"
if "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/v" --steps 2 --batch 2 --prediction v \
    --zero-snr --sample-count 4 --sample-steps 3 2>"$T/stderr" && grep -q '"prediction_type": "v_prediction",' "$S" &&
    grep -q '"rescale_betas_zero_snr": true,' "$S" && grep -q '"timestep_spacing": "trailing",' "$S" &&
    [ -s "$T/v/samples.png" ] && "$LOCO" info "$T/v" >"$T/stdout" 2>>"$T/stderr" &&
    grep -q 'abar\[T-1\] 0 (zero terminal SNR);.*v_prediction' "$T/stdout"; then
    ok "train --prediction v --zero-snr: scheduler_config.json and info say so, samples.png written"
else bad "train --prediction v --zero-snr"; fi
for ts in authors trailing; do
    if "$LOCO" --quiet sample "$T/v" --count 2 --steps 4 --timesteps $ts --out "$T/vs.png" 2>"$T/stderr" &&
        [ -s "$T/vs.png" ]; then ok "sample a zero-SNR v model from pure noise ($ts timesteps)"
    else bad "sample a zero-SNR v model ($ts)"; fi
done
if ! "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/v" --steps 3 --batch 2 --resume \
    --sample-count 0 2>"$T/stderr" && grep -q 'train_state.safetensors.*prediction_type v_prediction' "$T/stderr"; then
    ok "resume of a v run as eps is refused, naming the state file and prediction_type"
else bad "resume of a v run as eps"; fi
if ! "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/v" --steps 3 --batch 2 --resume \
    --prediction v --sample-count 0 2>"$T/stderr" && grep -q 'train_state.safetensors.*rescale_betas_zero_snr true' "$T/stderr"; then
    ok "resume of a zero-SNR run without --zero-snr is refused, naming the state file and the key"
else bad "resume without --zero-snr"; fi
if ! "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/b" --steps 3 --batch 2 --resume \
    --beta-end 0.01 --prediction v --zero-snr --sample-count 0 2>"$T/stderr" &&
    grep -q 'train_state.safetensors.*prediction_type epsilon' "$T/stderr"; then
    ok "resume of an eps run as v is refused (a state from before the key counts as epsilon)"
else bad "resume of an eps run as v"; fi
if "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/v" --steps 3 --batch 2 --resume \
    --prediction v --zero-snr --sample-count 0 2>"$T/stderr"; then ok "resume with the same flags"
else bad "resume with the same flags"; fi
if "$LOCO" --quiet train --config "$T/cfg.json" --data faces --out "$T/c" --steps 1 --batch 2 --schedule cosine \
    --prediction sample --sample-count 0 2>"$T/stderr" &&
    grep -q '"beta_schedule": "squaredcos_cap_v2",' "$T/c/scheduler/scheduler_config.json" &&
    grep -q '"prediction_type": "sample",' "$T/c/scheduler/scheduler_config.json"; then
    ok "train --schedule cosine --prediction sample: scheduler_config.json says so"
else bad "train --schedule cosine --prediction sample"; fi

expect_fail() { # description, then the arguments
    d="$1"; shift
    "$LOCO" "$@" >/dev/null 2>"$T/stderr"
    rc=$?
    if [ "$rc" -ge 1 ] && [ "$rc" -le 2 ] && grep -q '^loco: ' "$T/stderr" && ! grep -q 'Sanitizer\|runtime error:' "$T/stderr"
    then ok "$d fails cleanly (exit $rc)"; else bad "$d (exit $rc)"; fi
}
expect_fail "missing config" train --config "$T/none.json" --data faces --out "$T/x"
expect_fail "bad data name" train --config "$T/cfg.json" --data no-such-data --out "$T/x"
expect_fail "batch 0" train --config "$T/cfg.json" --data faces --out "$T/x" --batch 0
expect_fail "no --out" train --config "$T/cfg.json" --data faces
expect_fail "--ema 1" train --config "$T/cfg.json" --data faces --out "$T/x" --ema 1
expect_fail "resume without state" train --config "$T/cfg.json" --data faces --out "$T/x" --resume
expect_fail "--sample-steps 1" train --config "$T/cfg.json" --data faces --out "$T/x" --sample-steps 1
expect_fail "--beta-end 0" train --config "$T/cfg.json" --data faces --out "$T/x" --beta-end 0
expect_fail "--beta-start above --beta-end" train --config "$T/cfg.json" --data faces --out "$T/x" --beta-start 0.03
expect_fail "unknown option" train --config "$T/cfg.json" --data faces --out "$T/x" --bogus
expect_fail "--prediction bogus" train --config "$T/cfg.json" --data faces --out "$T/x" --prediction bogus
expect_fail "--zero-snr with eps prediction" train --config "$T/cfg.json" --data faces --out "$T/x" --zero-snr
expect_fail "--zero-snr --prediction eps" train --config "$T/cfg.json" --data faces --out "$T/x" --zero-snr --prediction eps
expect_fail "--lr-decay over --steps" train --config "$T/cfg.json" --data faces --out "$T/x" --steps 10 --lr-decay 11
expect_fail "--lr-decay -1" train --config "$T/cfg.json" --data faces --out "$T/x" --lr-decay -1
for f in 1:2 5:4:0.5 0:1000:0.5 0:999:0 0:999:1.5 a:b:c 1:2:0.5:9 100:200:nan -1:5:0.5; do
    expect_fail "--t-focus $f" train --config "$T/cfg.json" --data faces --out "$T/x" --t-focus "$f"
done
for f in 0 -1 nan inf 1:0 1:13 1:x x 2:3:4; do
    expect_fail "--multiscale-loss $f" train --config "$T/cfg.json" --data faces --out "$T/x" --multiscale-loss "$f"
done
expect_fail "--multiscale-loss 1:6 (blocks of 64 on 32x32)" train --config "$T/cfg.json" --data faces --out "$T/x" --steps 1 --multiscale-loss 1:6
expect_fail "--schedule bogus" train --config "$T/cfg.json" --data faces --out "$T/x" --schedule bogus
expect_fail "--prediction without a value" train --config "$T/cfg.json" --data faces --out "$T/x" --prediction

summary
