#!/bin/sh
# test_sd_variants_cli.sh - Stable Diffusion 1.x and 2.x pipeline folders:
# variants of the tiny pipeline (tests/fixtures/sd-tiny/pipeline: SD-1-like,
# quick_gelu, conv projections, one head count, but SD 2.x's "!" padding)
# made by editing copies of its JSON configs (and, for linear projections,
# reshaping the projection tensors). Each opens, generates and edits with
# finite outputs, and a numeric property shows the variant was honoured:
#   - SD 1.x padding with <|endoftext|>: other token ids than "!" padding;
#   - use_linear_projection with the same weights reshaped [out,in,1,1] ->
#     [out,in]: the same eps as the conv projections (to 1e-6 of max |eps|);
#   - v_prediction: x0_hat = sqrt(abar) x - sqrt(1-abar) v, v being the
#     network's output (the epsilon folder's eps), computed by hand here;
#   - attention_head_dim as a per-block list: [8,8] gives the bytes of 8,
#     [8,4] other numbers;
#   - hidden_act gelu in the text encoder: another eps than quick_gelu.
. "$(dirname "$0")/cli_lib.sh"
cli_setup test_sd_variants_cli.sh

P="${LOCO_FIXTURES:-tests/fixtures}/sd-tiny/pipeline"

# variant NAME: a writable copy of the pipeline in $T/NAME
variant() { cp -r "$P" "$T/$1" && chmod -R u+w "$T/$1"; }
# edit FILE SED-EXPR: edits a JSON config in place (the copy's)
edit() { sed "$2" "$1" >"$1.new" && mv "$1.new" "$1"; }
# linear_proj DIR: the UNet's proj_in/proj_out weights [o,i,1,1] -> [o,i]
# (the safetensors header rewritten, padded with spaces to its length)
linear_proj() {
    _f="$1/unet/diffusion_pytorch_model.safetensors"
    _n=$(od -An -tu8 -N8 "$_f" | tr -d ' ')
    head -c 8 "$_f" >"$_f.new"
    dd if="$_f" bs=1 skip=8 count="$_n" 2>/dev/null |
        sed 's/\(proj_[a-z]*\.weight":{"dtype":"F32","shape":\)\[\([0-9]*\),\([0-9]*\),1,1\]/\1[\2,\3]    /g' >>"$_f.new"
    tail -c +$((9 + _n)) "$_f" >>"$_f.new"
    mv "$_f.new" "$_f"
}
# floats FILE NAME: tensor NAME of a safetensors file, one float per line
floats() {
    _n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    _o=$(dd if="$1" bs=1 skip=8 count="$_n" 2>/dev/null | grep -o "\"$2\":{[^}]*}" | sed 's/.*data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/')
    set -- "$1" $_o
    od -An -v -w4 -tf4 -j $((8 + _n + $2)) -N $(($3 - $2)) "$1" | tr -d ' '
}
# all_finite FILE NAME
all_finite() { [ -n "$(floats "$1" "$2" | head -1)" ] && ! floats "$1" "$2" | grep -qi 'nan\|inf'; }
# maxdiff A B: max |a - b| over two columns of floats, and max |b|; both
# must hold the 1024 values of a [1,4,16,16] tensor (else "nan nan", which
# fails every bound)
maxdiff() {
    if [ "$(grep -c . "$1")" -ne 1024 ] || [ "$(grep -c . "$2")" -ne 1024 ]; then echo "nan nan"; return; fi
    paste "$1" "$2" | awk '{d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; b = $2 < 0 ? -$2 : $2; if (b > r) r = b}
        END {printf "%.3e %.3e\n", m, r}'
}

# the latent for loco eps: [1,4,16,16] of 0.5 (nonzero, so x matters)
st_header "$T/x.safetensors" x 1,4,16,16 4096
# 1024 floats 0.5 (0x3f000000, little endian: 00 00 00 3f)
i=0; : >"$T/ramp.bin"
while [ $i -lt 1024 ]; do printf '\000\000\000\077' >>"$T/ramp.bin"; i=$((i + 1)); done
cat "$T/ramp.bin" >>"$T/x.safetensors"
eps_of() { # eps_of DIR OUT: loco eps at t = 500, guidance 7.5
    "$LOCO" eps "$1" --image-size 32 --x "$T/x.safetensors" --t 500 --prompt "a photo of a man" --out "$2" \
        >"$T/stdout" 2>"$T/stderr"
}
eps_of "$P" "$T/e_base.safetensors" || bad_cmd "eps of the base pipeline"
floats "$T/e_base.safetensors" eps >"$T/base.eps"

# generate and edit, finite outputs (latents and decoded images)
runs() { # runs NAME DIR
    _v=$1
    run_ok "$_v: generate" "$LOCO" generate "$2" --image-size 32 --prompt "a photo of a man" --steps 8 --seed 1 \
        --out "$T/${_v}_g.png" --tensors "$T/${_v}_g.safetensors"
    check "$_v: generated latents and image finite" \
        'all_finite "$T/${_v}_g.safetensors" latents && all_finite "$T/${_v}_g.safetensors" samples'
    run_ok "$_v: edit (text-supervised)" "$LOCO" edit "$2" --image-size 32 --prompt "a photo of a man" \
        --edit-prompt "a photo of a man with a hat" --seed 0 --rect 8,16,8,24 --steps 10 --max-iter 3 --min-iter 1 \
        --null-rank 2 --out "$T/${_v}_e" --save-tensors
    check "$_v: edited images and the direction finite" \
        'all_finite "$T/${_v}_e/tensors.safetensors" images && all_finite "$T/${_v}_e/directions.safetensors" directions'
}

# (a) SD 1.x: <|endoftext|> padding (quick_gelu is the fixture's)
variant sd1
edit "$T/sd1/tokenizer/special_tokens_map.json" 's/"pad_token": "!"/"pad_token": "<|endoftext|>"/'
edit "$T/sd1/tokenizer/tokenizer_config.json" 's/"pad_token": "!"/"pad_token": "<|endoftext|>"/'
"$LOCO" tokenize "$P" --prompt "a photo" >"$T/ids_base" 2>"$T/stderr"
"$LOCO" tokenize "$T/sd1" --prompt "a photo" >"$T/ids_sd1" 2>"$T/stderr"
check "SD 1.x padding: the ids end in 49407 (<|endoftext|>), not 0 (!)" \
    '! cmp -s "$T/ids_base" "$T/ids_sd1" && tr -s " ,[]\n" "\n\n\n\n\n" <"$T/ids_sd1" | grep . | tail -1 | grep -qx 49407 && tr -s " ,[]\n" "\n\n\n\n\n" <"$T/ids_base" | grep . | tail -1 | grep -qx 0'
runs sd1 "$T/sd1"

# (b) SD 2.x piece by piece, each against the base
variant lin
edit "$T/lin/unet/config.json" 's/"use_linear_projection": false/"use_linear_projection": true/'
linear_proj "$T/lin"
if eps_of "$T/lin" "$T/e_lin.safetensors"; then
    floats "$T/e_lin.safetensors" eps >"$T/lin.eps"
    set -- $(maxdiff "$T/lin.eps" "$T/base.eps")
    check "linear projections = conv projections of the same weights (max diff $1, max |eps| $2, bound 1e-6 relative)" \
        "awk 'BEGIN {exit !(\"$1\" != \"nan\" && $1 <= 1e-6 * $2)}'"
else bad_cmd "eps with linear projections"; fi
variant conv_as_lin # the conv config with [o,i] weights: refused, naming the tensor
linear_proj "$T/conv_as_lin"
"$LOCO" info "$T/conv_as_lin" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "conv projections with [o,i] weights: error naming the tensor" 'grep -q "proj_in.weight" "$T/stderr"'

variant v
edit "$T/v/scheduler/scheduler_config.json" 's/"prediction_type": "epsilon"/"prediction_type": "v_prediction"/'
if eps_of "$T/v" "$T/e_v.safetensors"; then
    floats "$T/e_v.safetensors" x0_hat >"$T/v.x0"
    # abar at t = 500 of the scaled_linear betas (0.00085, 0.012), by hand;
    # the base folder's eps is the network output, here v
    awk 'BEGIN {b0 = sqrt(0.00085); b1 = sqrt(0.012); a = 1
                for (i = 0; i <= 500; i++) {b = b0 + (b1 - b0) * i / 999; a *= 1 - b * b}
                printf "%.17g\n", a}' >"$T/abar"
    awk -v a="$(cat "$T/abar")" '{printf "%.9g\n", sqrt(a) * 0.5 - sqrt(1 - a) * $1}' "$T/base.eps" >"$T/v.x0_hand"
    set -- $(maxdiff "$T/v.x0" "$T/v.x0_hand")
    check "v_prediction: x0_hat = sqrt(abar) x - sqrt(1-abar) v by hand (max diff $1, max |x0| $2, bound 1e-5 relative)" \
        "awk 'BEGIN {exit !(\"$1\" != \"nan\" && $1 <= 1e-5 * $2)}'"
else bad_cmd "eps with v_prediction"; fi

variant heads88
edit "$T/heads88/unet/config.json" 's/"attention_head_dim": 8,/"attention_head_dim": [8, 8],/'
variant heads84
edit "$T/heads84/unet/config.json" 's/"attention_head_dim": 8,/"attention_head_dim": [8, 4],/'
eps_of "$T/heads88" "$T/e_h88.safetensors" && floats "$T/e_h88.safetensors" eps >"$T/h88.eps"
eps_of "$T/heads84" "$T/e_h84.safetensors" && floats "$T/e_h84.safetensors" eps >"$T/h84.eps"
check "attention_head_dim [8, 8]: the numbers of 8" '[ -s "$T/h88.eps" ] && cmp -s "$T/h88.eps" "$T/base.eps"'
check "attention_head_dim [8, 4]: 4 heads in the second block, other numbers" '[ -s "$T/h84.eps" ] && ! cmp -s "$T/h84.eps" "$T/base.eps"'

variant gelu
edit "$T/gelu/text_encoder/config.json" 's/"hidden_act": "quick_gelu"/"hidden_act": "gelu"/'
eps_of "$T/gelu" "$T/e_gelu.safetensors" && floats "$T/e_gelu.safetensors" eps >"$T/gelu.eps"
check "text encoder gelu: another eps than quick_gelu" '[ -s "$T/gelu.eps" ] && ! cmp -s "$T/gelu.eps" "$T/base.eps"'

# SD 2.x whole: gelu, linear projections, a head list, v_prediction, "!" padding
variant sd2
edit "$T/sd2/text_encoder/config.json" 's/"hidden_act": "quick_gelu"/"hidden_act": "gelu"/'
edit "$T/sd2/unet/config.json" 's/"use_linear_projection": false/"use_linear_projection": true/; s/"attention_head_dim": 8,/"attention_head_dim": [8, 4],/'
linear_proj "$T/sd2"
edit "$T/sd2/scheduler/scheduler_config.json" 's/"prediction_type": "epsilon"/"prediction_type": "v_prediction"/'
run_ok "sd2: info" "$LOCO" info "$T/sd2" --image-size 32
check "sd2: info says linear projections and v_prediction" 'grep -qi "linear" "$T/stdout" && grep -q "v_prediction" "$T/stdout"'
runs sd2 "$T/sd2"

summary
